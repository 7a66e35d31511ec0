#!/usr/bin/env python3
"""Extract the click options of `trtllm-serve` (`serve` in tensorrt_llm/commands/serve.py) by AST, as a JSON fixture.

Usage: python3 scripts/engine-args/trtllm_args.py SERVE_PY REF > llmconform/engines/engine_args/trtllm-REF.json
SERVE_PY is tensorrt_llm/commands/serve.py of a checkout (or unpacked wheel) at REF (a release tag or commit).
Only the standard library is needed: the package itself cannot be installed without its CUDA stack.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

TYPES = {"int": "int", "float": "float", "str": "str"}


def literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return None


def option(decorator: ast.Call) -> dict:
    names = [literal(a) for a in decorator.args]
    kw = {k.arg: k.value for k in decorator.keywords}
    flags = [n for n in names if n.startswith("-")]
    explicit = [n for n in names if not n.startswith("-")]
    # click names a parameter after its explicit name, else its first long flag.
    dest = explicit[0] if explicit else next((f for f in flags if f.startswith("--")), flags[0]).lstrip("-")
    kind_of = getattr(decorator.func, "attr", "")
    if kind_of == "argument":
        return {"argument": explicit[0], "dest": explicit[0]}
    entry = {"flags": flags, "dest": dest.replace("-", "_"),
             "default": literal(kw["default"]) if "default" in kw else None}
    if literal(kw.get("is_flag")) if "is_flag" in kw else False:
        entry["kind"] = "flag"
    else:
        type_node = kw.get("type")
        type_name = type_node.id if isinstance(type_node, ast.Name) else "any"
        entry.update(kind="value", type=TYPES.get(type_name, "any"),
                     multiple=bool(literal(kw["multiple"])) if "multiple" in kw else False)
    return entry


def extract(text: str, command: str = "serve") -> list[dict]:
    tree = ast.parse(text)
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == command)
    calls = [d for d in function.decorator_list if isinstance(d, ast.Call)
             and getattr(d.func, "attr", "") in ("option", "argument")]
    return [option(d) for d in calls]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, ref = argv
    fixture = {"engine": "trtllm", "version": ref, "source": "NVIDIA/TensorRT-LLM tensorrt_llm/commands/serve.py",
               "extracted_by": "scripts/engine-args/trtllm_args.py (AST)", "options": extract(Path(path).read_text())}
    json.dump(fixture, sys.stdout, indent=0)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
