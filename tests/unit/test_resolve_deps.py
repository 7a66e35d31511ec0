"""scripts/device/resolve_deps.py: which of a staged engine's dependencies travel to the GPU machine and which the
image's packages serve (the first SGLang install failed on the image's tokenizers 0.23.2, which the carried
transformers 5.12.1 does not accept)."""

import importlib.util
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


spec = importlib.util.spec_from_file_location("resolve_deps", ROOT / "scripts" / "device" / "resolve_deps.py")
resolve_deps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(resolve_deps)

HAVE = "numpy==2.5.2\ntokenizers==0.23.2\ntransformers==5.17.0\npyyaml\nregex  # a comment\n"


def wheel(directory: Path, name: str, version: str, requires: list[str]) -> Path:
    path = directory / f"{name}-{version}-py3-none-any.whl"
    metadata = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\n"
                                                            f"Version: {version}\n{metadata}")
    return path


def test_read_have_takes_names_and_pinned_versions():
    have = resolve_deps.read_have(HAVE)
    assert str(have["tokenizers"]) == "0.23.2" and have["pyyaml"] is None and have["regex"] is None


@pytest.mark.parametrize("requirement, pinned, served", [
    ("tokenizers>=0.22.0,<=0.23.0", set(), False),  # the image's 0.23.2 is outside: it travels
    ("tokenizers>=0.22", set(), True),
    ("transformers==5.12.1", {"transformers"}, False),
    ("pyyaml>=6", set(), True),  # version unknown, not pinned: the image's copy is trusted
    ("pyyaml==6.0.1", {"pyyaml"}, False),  # version unknown but pinned exactly: it travels
    ("numpy<2.4", set(), True),  # IMAGE_WINS: never replaced under the image's compiled packages
    ("msgspec", set(), False),  # not on the image
])
def test_image_has(requirement, pinned, served):
    have = resolve_deps.read_have(HAVE)
    assert resolve_deps.image_has(Requirement(requirement), have, pinned) is served


def test_walk_carries_a_dependency_of_a_carried_package_the_image_does_not_satisfy(tmp_path, monkeypatch, capsys):
    """The staged engine pins transformers; the carried transformers asks for a tokenizers the image's version does
    not satisfy, so tokenizers travels too; numpy stays the image's; the walk follows what it fetched."""
    index, staged, dest = tmp_path / "index", tmp_path / "staged", tmp_path / "dest"
    for d in (index, staged, dest):
        d.mkdir()
    wheel(staged, "engine", "1.0", ["transformers==5.12.1", "numpy<2.4", "pyyaml"])
    offered = {
        "transformers": wheel(index, "transformers", "5.12.1", ["tokenizers<=0.23.0,>=0.22.0", "regex", "filelock"]),
        "tokenizers": wheel(index, "tokenizers", "0.23.0", []),
        "filelock": wheel(index, "filelock", "3.20.0", []),
    }
    (tmp_path / "have.txt").write_text(HAVE)
    asked = []

    def pip_download(argv, check):  # stands in for `pip download --no-deps ... -d DEST REQUIREMENT`
        requirement = Requirement(argv[-1])
        asked.append(str(requirement))
        source = offered[requirement.name]
        (Path(argv[argv.index("-d") + 1]) / source.name).write_bytes(source.read_bytes())

    monkeypatch.setattr(resolve_deps.subprocess, "run", pip_download)
    resolve_deps.main(str(staged), str(tmp_path / "have.txt"), str(dest))
    assert asked == ["transformers==5.12.1", "tokenizers<=0.23.0,>=0.22.0", "filelock"]
    assert capsys.readouterr().out.split() == ["transformers==5.12.1", "tokenizers==0.23.0", "filelock==3.20.0"]
