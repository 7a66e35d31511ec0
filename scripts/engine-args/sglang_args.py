#!/usr/bin/env python3
"""Extract SGLang's `launch_server` argument definitions from a wheel's source by AST, as a JSON fixture.

Usage: python3 scripts/engine-args/sglang_args.py sglang-X.Y.Z-*.whl > llmconform/engines/engine_args/sglang-X.Y.Z.json
(or a path to an unpacked `sglang/srt/server_args.py`). Only the standard library is needed.

Why AST and not `prepare_server_args`: server_args.py imports torch, torchvision (decode_jpeg), triton and a pinned
transformers at module level; on a CPU machine that is a multi-GB install whose transformers clashes with the
config names SGLang registers (tried with 0.5.16: `'qwen3_asr' is already used by a Transformers config`).
The rules below are those of `sglang/srt/arg_groups/arg_utils.py:add_cli_args_from_dataclass` (ServerArgs fields
annotated `A[T, Arg(...)]` or `A[T, "help"]`) plus the explicit `parser.add_argument` calls of
`ServerArgs.add_cli_args`; the checker rebuilds an argparse parser from them (abbreviations allowed, as in SGLang).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

SERVER_ARGS = "sglang/srt/server_args.py"
FLAG_ACTIONS = {"store_true", "store_false", "store_const", "DeprecatedAction", "DeprecatedStoreTrueAction",
                "DeprecatedStoreConstAction"}
VALUE_ACTIONS = {"store", "DeprecatedAliasStoreAction", "LoRAPathAction"}
TYPES = {"int": "int", "float": "float", "str": "str"}


def read_source(path: str) -> tuple[str, str]:
    """(server_args.py text, version) from a wheel or from the file itself."""
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            version = re.search(r"sglang-([^-]+)-", path.rsplit("/", 1)[-1]).group(1)
            return wheel.read(SERVER_ARGS).decode(), version
    text = Path(path).read_text()
    return text, "unknown"


def literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def name_of(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ""


def action_option(flags, dest, action: str, extra: dict) -> dict:
    if action == "BooleanOptionalAction":
        return {"flags": flags, "dest": dest, "kind": "bool-optional"}
    if action in FLAG_ACTIONS:
        return {"flags": flags, "dest": dest, "kind": "flag"}
    if action in VALUE_ACTIONS:
        return {"flags": flags, "dest": dest, "kind": "value", "nargs": extra.get("nargs"),
                "type": TYPES.get(extra.get("type", "str"), "any")}
    raise SystemExit(f"{dest}: unknown argparse action {action!r}: teach scripts/engine-args/sglang_args.py about it")


def unwrap_optional(node):
    """X from Optional[X] or Union[X, None]; the node itself otherwise."""
    if isinstance(node, ast.Subscript) and name_of(node.value) == "Optional":
        return node.slice
    if isinstance(node, ast.Subscript) and name_of(node.value) == "Union" and isinstance(node.slice, ast.Tuple):
        rest = [e for e in node.slice.elts if not (isinstance(e, ast.Constant) and e.value is None)]
        if len(rest) == 1:
            return rest[0]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        sides = [s for s in (node.left, node.right) if not (isinstance(s, ast.Constant) and s.value is None)]
        if len(sides) == 1:
            return sides[0]
    return node


def field_option(field: ast.AnnAssign) -> dict | None:
    ann = field.annotation
    if not (isinstance(ann, ast.Subscript) and name_of(ann.value) in ("A", "Annotated")
            and isinstance(ann.slice, ast.Tuple)):
        return None  # not a CLI field: registered by hand or not at all
    type_node, *meta = ann.slice.elts
    arg = {}
    for item in meta:
        if isinstance(item, ast.Call) and name_of(item.func) == "Arg":
            arg = {kw.arg: kw.value for kw in item.keywords}
            break
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            break
    else:
        return None
    if arg.get("no_cli") is not None and literal(arg["no_cli"]):
        return None
    dest = field.target.id
    default = literal(field.value) if field.value is not None else None
    flags = [literal(arg["cli_name"]) if "cli_name" in arg else "--" + dest.replace("_", "-")]
    flags += literal(arg["aliases"]) if "aliases" in arg else []
    nargs = literal(arg["nargs"]) if "nargs" in arg else None
    choices = literal(arg["choices"]) if "choices" in arg else None
    if "action" in arg:
        kwargs = arg.get("action_kwargs")
        pairs = zip(kwargs.keys, kwargs.values) if isinstance(kwargs, ast.Dict) else ()
        extra = {literal(k): (name_of(v) if literal(k) == "type" else literal(v)) for k, v in pairs}
        return {**action_option(flags, dest, name_of(arg["action"]), extra), "default": default}
    inner = unwrap_optional(type_node)
    option = {"flags": flags, "dest": dest, "kind": "value", "nargs": nargs, "type": "any", "default": default}
    if isinstance(inner, ast.Subscript) and name_of(inner.value) == "Literal":
        values = literal(inner.slice)
        values = list(values) if isinstance(values, tuple) else [values]
        option.update(type=TYPES.get(type(values[0]).__name__, "any"), choices=choices or values)
    elif isinstance(inner, ast.Subscript) and name_of(inner.value) in ("List", "list") and "type_parser" not in arg:
        option.update(nargs=nargs or "+", type=TYPES.get(name_of(inner.slice), "str"), choices=choices)
    elif name_of(inner) == "bool":
        option = {"flags": flags, "dest": dest, "kind": "flag", "default": default}
    else:
        option.update(type="any" if "type_parser" in arg else TYPES.get(name_of(inner), "str"), choices=choices)
    return option


def explicit_options(add_cli_args: ast.FunctionDef) -> list[dict]:
    options = []
    for call in ast.walk(add_cli_args):
        if not (isinstance(call, ast.Call) and name_of(call.func) == "add_argument"):
            continue
        flags = [literal(a) for a in call.args]
        kw = {k.arg: k.value for k in call.keywords}
        dest = literal(kw["dest"]) if "dest" in kw else flags[0].lstrip("-").replace("-", "_")
        if "action" in kw:
            options.append(action_option(flags, dest, name_of(kw["action"]),
                                         {"nargs": literal(kw.get("nargs")), "type": name_of(kw.get("type"))}))
            continue
        options.append({"flags": flags, "dest": dest, "kind": "value", "nargs": literal(kw.get("nargs")),
                        "type": TYPES.get(name_of(kw.get("type")), "any"),
                        "choices": literal(kw["choices"]) if "choices" in kw else None})
    return options


def extract(text: str) -> list[dict]:
    tree = ast.parse(text)
    server_args = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ServerArgs")
    fields = {}  # a field declared twice is one dataclass field: the later annotation wins, the first position stays
    for statement in server_args.body:
        if isinstance(statement, ast.AnnAssign):
            fields[statement.target.id] = field_option(statement)
    options = [o for o in fields.values() if o]
    add_cli_args = next(n for n in server_args.body if isinstance(n, ast.FunctionDef) and n.name == "add_cli_args")
    return options + explicit_options(add_cli_args)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    text, version = read_source(argv[0])
    fixture = {"engine": "sglang", "version": version, "source": f"{argv[0].rsplit('/', 1)[-1]}:{SERVER_ARGS}",
               "extracted_by": "scripts/engine-args/sglang_args.py (AST)", "options": extract(text)}
    json.dump(fixture, sys.stdout, indent=0)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
