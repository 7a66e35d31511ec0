"""Run with the Python of a vLLM install: parse each argv of stdin's JSON with the real `vllm serve` parser.

stdin: {"argvs": [[args after `vllm serve`], ...], "dests": [[dest, ...], ...]};
stdout: one JSON list, per argv {"values": {dest: parsed value}} or {"error": what the parser printed}.
Standalone on purpose: llmconform is not installed in the engine's environment.
"""

import argparse
import contextlib
import io
import json
import sys

from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser


def serve_parser() -> argparse.ArgumentParser:
    top = FlexibleArgumentParser(prog="vllm")
    return ServeSubcommand().subparser_init(top.add_subparsers(dest="subparser"))


def parse(parser, argv, dests):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            namespace = parser.parse_args(argv)
    except SystemExit:
        return {"error": stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "exit"}
    return {"values": {d: getattr(namespace, d, "<no such dest>") for d in dests}}


def main():
    request = json.load(sys.stdin)
    parser = serve_parser()
    json.dump([parse(parser, a, d) for a, d in zip(request["argvs"], request["dests"])], sys.stdout)


if __name__ == "__main__":
    main()
