import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from llmconform import models


def digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("name", ["qwen2-tiny", "qwen3moe-tiny", "qwen2.5-7b"])
def test_same_recipe_same_bytes(name, tmp_path):
    first = models.ensure(name, tmp_path / "a")
    second = models.ensure(name, tmp_path / "b")
    assert digest(first) == digest(second)


def test_parallel_requests_make_the_model_once(tmp_path):
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: models.ensure("llama-tiny", tmp_path), range(4)))
    assert len(set(paths)) == 1
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == [paths[0].name]


def test_tiny_weights_match_the_config_and_are_not_flat(tmp_path):
    directory = models.ensure("qwen3moe-tiny", tmp_path)
    config = json.loads((directory / "config.json").read_text())
    tensors = load_file(str(directory / "model.safetensors"))
    assert tensors["model.embed_tokens.weight"].shape == (config["vocab_size"], config["hidden_size"])
    experts = {k for k in tensors if ".mlp.experts." in k and k.startswith("model.layers.0.")}
    assert len(experts) == 3 * config["num_experts"]
    assert tensors["model.layers.0.self_attn.q_norm.weight"].shape == (config["head_dim"],)
    assert 0.15 < float(np.std(tensors["lm_head.weight"])) < 0.25


def test_tokens_are_ascii_and_the_chat_template_is_chatml(tmp_path):
    directory = models.ensure("qwen2-tiny", tmp_path)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    texts = [tokenizer.decode([i]) for i in range(tokenizer.get_vocab_size())]
    assert all(t.isascii() and "\ufffd" not in t for t in texts)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|im_end|>" and "<|im_start|>" in config["chat_template"]
    # Qwen's pre-tokenization (what transformers imposes for this model type): digits one by one
    assert tokenizer.encode("2345").tokens == ["2", "3", "4", "5"]


def test_shape_tokenizer_covers_the_whole_vocabulary(tmp_path):
    directory = models.ensure("llama-3.1-8b", tmp_path)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    config = json.loads((directory / "config.json").read_text())
    assert tokenizer.get_vocab_size() == config["vocab_size"] == 128256
    assert not (directory / "model.safetensors").exists()
    assert tokenizer.decode([128255]) != ""


def test_byte_fallback_tokenizer_splits_characters_into_byte_tokens(tmp_path):
    """llama-bytefallback-tiny: rare characters become <0xNN> tokens (a token alone can be a broken UTF-8
    sequence), decoding the ids gives the text back, and whitespace runs survive."""
    directory = models.ensure("llama-bytefallback-tiny", tmp_path)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    config = json.loads((directory / "config.json").read_text())
    assert tokenizer.get_vocab_size() == config["vocab_size"] == 1024
    text = "Prix: 12 € 東京 😀   a\n\n  b"
    encoding = tokenizer.encode(text)
    assert encoding.tokens[encoding.tokens.index("<0xE2>"):][:3] == ["<0xE2>", "<0x82>", "<0xAC>"]
    assert tokenizer.decode(encoding.ids) == text
    assert tokenizer.decode([tokenizer.token_to_id("<0xE2>")]) == "\ufffd"
