"""A stand-in for `vllm serve MODEL_DIR --served-model-name NAME --host H --port P [--api-key K] ...`: it writes vLLM's
startup log markers (the stages llmconform follows) a moment apart, then serves the fake OpenAI server
(tests/fakes/openai_server.py) as NAME, counting prompt tokens with MODEL_DIR's tokenizer.json as vLLM would. For tests
of what a user sees while servers start and load runs, at no engine's cost; other vLLM flags are accepted and ignored.

Used as a matrix's engine command: `command: [python3, tests/fakes/vllm_serve.py]` (engine vllm, device cpu).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes import openai_server

# vLLM 0.32's log lines that mark its startup stages (llmconform/engines/vllm.py), in order.
STARTUP_LOG = ("INFO vLLM API server version 0.0.0+fake", "INFO Starting to load model (fake)",
               "INFO Loading weights took 0.01 seconds", "INFO Application startup complete.")


class TokenizedFake(openai_server.FakeOpenAI):
    tokenizer = None  # the model's tokenizers.Tokenizer

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--stage-seconds", type=float, default=1.5,
                        help="how long each startup stage takes (longer than llmconform's 1 s readiness poll, so "
                             "that each is seen)")
    args, _ = parser.parse_known_args()
    from tokenizers import Tokenizer

    TokenizedFake.tokenizer = Tokenizer.from_file(str(Path(args.model) / "tokenizer.json"))
    openai_server.MODEL = args.served_model_name
    for line in STARTUP_LOG:
        print(line, flush=True)
        time.sleep(args.stage_seconds)
    server = openai_server.FakeHTTPServer(TokenizedFake(api_key=args.api_key), host=args.host, port=args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
