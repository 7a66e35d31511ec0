#!/usr/bin/env python3
"""Which wheels an SGLang release needs on the GPU machine beyond what its image has: a breadth-first walk of the
Requires-Dist of the staged wheels (markers evaluated for python 3.12 on linux x86_64), each requirement fetched
with `pip download --no-deps` (its newest version that fits). pip's own resolver cannot be used here: it insists on
resolving torch's CUDA wheels, which the machine has and the package index may lack.

Usage: resolve_deps.py WHEEL_DIR HAVE_FILE DEST_DIR PIP_PLATFORM_ARGS...   (prints name==version per fetched wheel)
Skipped: the torch family and CUDA runtime wheels (the machine's), packages listed in HAVE_FILE unless a staged
wheel pins them with ==, and those named in $SKIP (space-separated).
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


def main(wheel_dir, have_file, dest, *platform):
    have = {canonicalize_name(line.strip()) for line in Path(have_file).read_text().splitlines() if line.strip()}
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
            if name in seen or name in skip or MACHINE_STACK.match(name) or (name in have and name not in pinned):
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
