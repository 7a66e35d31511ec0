import pytest
from planning_helpers import make_case

from llmconform.serving import resources
from llmconform.serving.resources import Hardware, Node


@pytest.mark.parametrize("text, names", [
    ("n[1-2]", ["n1", "n2"]),
    ("gpu[01-03,07],login1", ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]),
    ("node7", ["node7"]),
    ("a[1,3-4]b", ["a1b", "a3b", "a4b"]),
])
def test_expand_nodelist(text, names):
    assert resources.expand_nodelist(text) == names


@pytest.mark.parametrize("text, count", [("8", 8), ("h100:8", 8), ("gpu:h100:4", 4), ("a100:2,h100:2", 4),
                                         ("", None), (None, None), ("h100:x", None)])
def test_parse_gpu_count(text, count):
    assert resources.parse_gpu_count(text) == count


def test_visible_devices_are_positions():
    assert resources.parse_visible_devices("4,5,6") == (0, 1, 2)
    assert resources.parse_visible_devices("") == ()
    assert resources.parse_visible_devices("-1") == ()
    assert resources.parse_visible_devices(None) is None


def test_detect_reads_a_slurm_allocation():
    hw = resources.detect({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_GPUS_PER_NODE": "8",
                           "CUDA_VISIBLE_DEVICES": ""})
    assert hw.source == "slurm"
    assert [n.name for n in hw.nodes] == ["n1", "n2"]
    assert all(len(n.gpus) == 8 for n in hw.nodes)


def test_detect_local_honours_cuda_visible_devices():
    hw = resources.detect({"CUDA_VISIBLE_DEVICES": "2,3"})
    assert hw.source == "local" and hw.nodes[0].gpus == (0, 1)


def _hw(nodes=1, gpus=8, cpus=2, source="slurm"):
    return Hardware(tuple(Node(f"n{i}", tuple(range(gpus)), tuple(range(cpus))) for i in range(nodes)), source)


@pytest.mark.parametrize("layout, hw, launcher, reason", [
    ("tp8", _hw(), "local", None),
    ("tp8pp2", _hw(), "local", "needs 16 GPUs per node, n0 has 8"),
    ("tp8@2nodes", _hw(nodes=1, source="local"), "slurm", "needs 2 nodes, 1 available (run inside `salloc -N 2`)"),
    ("tp8@2nodes", _hw(nodes=2), "local", "the local launcher runs on one machine"),
    ("tp8pp2@2nodes", _hw(nodes=2), "slurm", None),
])
def test_why_not(layout, hw, launcher, reason):
    case = make_case("vllm", layout)
    case = type(case)(**{**case.__dict__, "launcher": launcher})
    result = hw.why_not(case)
    assert (result is None) if reason is None else (reason in result)


def test_cpu_device_counts_cores():
    assert _hw(gpus=0, cpus=2).why_not(make_case("vllm", "tp2", device="cpu")) is None
    assert "needs 4 CPU cores" in _hw(gpus=0, cpus=2).why_not(make_case("vllm", "tp2pp2", device="cpu"))


def test_a_waiting_lease_says_who_holds_the_devices_and_files_go_on_release(tmp_path, monkeypatch):
    import os

    from llmconform.serving.resources import lease_devices, lease_ports

    monkeypatch.setenv("LLMCONFORM_LOCK_DIR", str(tmp_path))
    first = lease_devices("host-cpu", (0, 1, 2), 2, timeout_s=5)
    _base, ports = lease_ports()
    assert first.ids == (0, 1) and len(list(tmp_path.iterdir())) == 3
    assert f"pid {os.getpid()} since" in (tmp_path / "host-cpu-0.lock").read_text()
    notices = []
    with pytest.raises(TimeoutError) as waited:
        lease_devices("host-cpu", (0, 1, 2), 2, timeout_s=1.2, poll_s=0.1, notify=notices.append,
                      notify_every_s=0.5)
    assert len(notices) >= 2 and notices[0].startswith("waited ")
    assert "2 free of 3 host-cpu device(s); held by pid" in str(waited.value)
    assert "(ids 0,1)" in str(waited.value)
    first.release()
    ports.release()
    assert list(tmp_path.iterdir()) == []
    assert lease_devices("host-cpu", (0, 1, 2), 2, timeout_s=1).ids == (0, 1)
