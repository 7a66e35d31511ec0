#!/usr/bin/env python3
"""Re-take the pinned copy of OpenAI's OpenAPI document (llmconform/api/openai-openapi.json) from one commit of
github.com/openai/openai-openapi: the component schemas the conformance suites validate against, with the commit
they came from.

    python3 scripts/refresh-openai-spec.py COMMIT                 # download openapi.json of that commit
    python3 scripts/refresh-openai-spec.py COMMIT --from FILE     # a copy you already have (openapi.json or .yaml)

Then run the suites against a conforming server (tests/integration/test_conformance_catches_bugs.py) and review the
diff: a schema that changed can turn a passing engine into a failing one."""

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmconform.api import openapi


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="a full 40-hex commit of openai/openai-openapi")
    parser.add_argument("--from", dest="source", type=Path, help="read this file instead of downloading")
    args = parser.parse_args()
    if not re.fullmatch(r"[0-9a-f]{40}", args.commit):
        print(f"error: commit {args.commit!r} is not a full 40-hex commit id", file=sys.stderr)
        return 2
    if args.source:
        text = args.source.read_text()
    else:
        url = f"https://raw.githubusercontent.com/{openapi.SOURCE_REPOSITORY}/{args.commit}/{openapi.SOURCE_PATH}"
        with urllib.request.urlopen(url, timeout=120) as response:
            text = response.read().decode()
    if args.source and args.source.suffix in (".yaml", ".yml"):
        import yaml

        document = yaml.safe_load(text)
    else:
        document = json.loads(text)
    pinned = openapi.extract(document, args.commit)
    openapi.PINNED_FILE.write_text(json.dumps(pinned, indent=1, sort_keys=False, ensure_ascii=False) + "\n")
    print(f"{openapi.PINNED_FILE}: {len(pinned['schemas'])} schemas from {pinned['source']} "
          f"(OpenAPI {pinned['openapi']}, API {pinned['info_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
