"""The pytest plugin's own surface: the ids it records for tests, the suites shipped inside the package."""

from types import SimpleNamespace

from llmconform.pytest.plugin import SHIPPED_SUITES, result_id


def test_shipped_suites_keep_one_result_id_wherever_they_are_collected_from(tmp_path):
    # pytest's node id of the same test differs with the rootdir: from the source tree, from an installed package.
    for nodeid in ("llmconform/suites/test_openai_models.py::test_models_list[vllm-m-tp1]",
                   "test_openai_models.py::test_models_list[vllm-m-tp1]"):
        item = SimpleNamespace(path=SHIPPED_SUITES / "test_openai_models.py", nodeid=nodeid)
        assert result_id(item) == "suites/test_openai_models.py::test_models_list[vllm-m-tp1]"
    own = SimpleNamespace(path=tmp_path / "test_mine.py", nodeid="test_mine.py::test_x")
    assert result_id(own) == "test_mine.py::test_x"
