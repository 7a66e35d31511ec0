"""The registries of engines and launchers (llmconform.registry): what a user's conftest may add, and the errors a
wrong name or a clash gives."""

import pytest

from llmconform import engines
from llmconform.errors import UserError
from llmconform.registry import Registry
from llmconform.serving import launchers


class Toy:
    name = "toy"


class OtherToy:
    name = "toy"


def test_an_extension_is_found_by_its_name_and_a_wrong_name_lists_the_known_ones():
    registry = Registry("engine")
    toy = Toy()
    registry.add(toy)
    assert registry.named("toy") is toy
    with pytest.raises(UserError, match=r"unknown engine 'tiy' \(known: toy\)"):
        registry.named("tiy")


def test_a_clash_of_two_types_under_one_name_is_refused_and_the_same_type_replaces():
    registry = Registry("launcher")
    registry.add(Toy())
    again = Toy()
    registry.add(again)  # a conftest loaded twice
    assert registry.named("toy") is again
    with pytest.raises(UserError, match=r"launcher 'toy' is already registered \(Toy\)"):
        registry.add(OtherToy())


def test_an_extension_without_a_name_is_refused():
    nameless = type("Nameless", (), {"name": ""})()
    with pytest.raises(UserError, match="engine Nameless has no name"):
        Registry("engine").add(nameless)


def test_the_built_in_engines_and_launchers_are_registered():
    assert {"vllm", "sglang", "trtllm"} <= set(engines.ENGINES)
    assert engines.get("vllm").name == "vllm"
    assert {"local", "docker", "slurm"} <= set(launchers.LAUNCHERS)
    with pytest.raises(UserError, match="unknown launcher 'k8s'"):
        launchers.get("k8s")
