#!/usr/bin/env python3
"""Which wheels an SGLang release needs on the GPU machine beyond what its image has: a breadth-first walk of the
Requires-Dist of the staged wheels (markers evaluated for python 3.12 on linux x86_64), each requirement fetched
with `pip download --no-deps` (its newest version that fits). pip's own resolver cannot be used here: it insists on
resolving torch's CUDA wheels, which the machine has and the package index may lack.

Usage: resolve_deps.py WHEEL_DIR HAVE_FILE DEST_DIR PIP_PLATFORM_ARGS...   (prints name==version per fetched wheel)
Skipped: the torch family and CUDA runtime wheels (the machine's), those named in $SKIP (space-separated), and the
packages HAVE_FILE lists (one per line, `name` or `name==version`) where the image's copy will do: its version
satisfies the requirement, or, when its version is not known, no staged wheel pins it with ==. A requirement the
image's version does not satisfy makes the package travel, whoever asks for it: SGLang 0.5.16 pins transformers
5.12.1, which wants tokenizers>=0.22.0,<=0.23.0, and the image's tokenizers 0.23.2 broke the install.
"""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

MACHINE_STACK = re.compile(r"^(torch|torchaudio|torchvision|triton|nvidia-.*|cuda-.*)$")
ENV = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}


def requirements(wheel: Path, extras: set[str]) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    out = []
    for line in re.findall(r"^Requires-Dist: (.+)$", meta, re.M):
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**ENV, "extra": e}) for e in extras | {""}):
            out.append(req)
    return out


def read_have(text: str) -> dict[str, Version | None]:
    """The image's packages: name -> version (None where the list gives only the name)."""
    have = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            have[canonicalize_name(name.strip())] = Version(version.strip()) if version.strip() else None
    return have


# The image's copy serves every requirement on these: numpy 2.5.2 is outside the bounds numba (<2.5) and
# mistral-common (<2.4) declare, but a numpy of our own ahead of the image's would sit under the image's compiled
# packages (scipy, pandas, torch) built against 2.5, and SGLang 0.5.16 served with the image's numpy.
IMAGE_WINS = {"numpy"}


def image_has(req: Requirement, have: dict[str, Version | None], pinned: set[str]) -> bool:
    """Whether the image's copy of the package serves this requirement, so that it need not travel."""
    name = canonicalize_name(req.name)
    if name not in have:
        return False
    if name in IMAGE_WINS:
        return True
    if have[name] is None:  # version unknown: trust the image unless a staged wheel pins an exact version
        return name not in pinned
    return req.specifier.contains(have[name], prereleases=True)


def main(wheel_dir, have_file, dest, *platform):
    have = read_have(Path(have_file).read_text())
    skip = {canonicalize_name(n) for n in os.environ.get("SKIP", "").split()}
    dest = Path(dest)
    queue = [(w, {"cu13"}) for w in sorted(Path(wheel_dir).glob("*.whl"))]
    pinned = {canonicalize_name(r.name) for w, _ in queue for r in requirements(w, set())
              if any(s.operator == "==" for s in r.specifier)}
    seen = {canonicalize_name(w.name.split("-")[0]) for w, _ in queue}
    while queue:
        wheel, extras = queue.pop(0)
        for req in requirements(wheel, extras):
            name = canonicalize_name(req.name)
            if name in seen or name in skip or MACHINE_STACK.match(name) or image_has(req, have, pinned):
                continue
            seen.add(name)
            before = set(dest.glob("*.whl"))
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *platform, "-d", str(dest),
                            f"{req.name}{req.specifier}"], check=True)
            (fetched,) = set(dest.glob("*.whl")) - before
            print(f"{name}=={fetched.name.split('-')[1]}")
            queue.append((fetched, set(req.extras)))


if __name__ == "__main__":
    main(*sys.argv[1:])
