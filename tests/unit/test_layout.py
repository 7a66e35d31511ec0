import pytest

from llmconform.config.layout import Layout, parse
from llmconform.errors import LayoutError


@pytest.mark.parametrize("text, expected, gpus", [
    ("tp1", Layout(), 1),
    ("tp2pp2", Layout(tp=2, pp=2), 4),
    ("tp8ep2", Layout(tp=8, ep=2), 8),
    ("tp8dp2", Layout(tp=8, dp=2), 16),
    ("tp8adp2", Layout(tp=8, adp=2), 8),
    ("tp4pp2@2nodes", Layout(tp=4, pp=2, nodes=2), 8),
    ("tp8ep", Layout(tp=8, ep=8), 8),
    ("tp8dp2ep", Layout(tp=8, dp=2, ep=16), 16),
    ("TP2PP2", Layout(tp=2, pp=2), 4),
    ("pp2", Layout(pp=2), 2),
    ("tp16@2node", Layout(tp=16, nodes=2), 16),
])
def test_parse_strings(text, expected, gpus):
    layout = parse(text)
    assert layout == expected
    assert layout.gpus == gpus


def test_parse_mapping_and_bare_ep_switch():
    assert parse({"tp": 4, "pp": 2, "nodes": 2}) == Layout(tp=4, pp=2, nodes=2)
    assert parse({"tp": 4, "dp": 2, "ep": True}) == Layout(tp=4, dp=2, ep=8)
    assert parse({"tp": 4, "ep": False}) == Layout(tp=4)


@pytest.mark.parametrize("layout", ["tp1", "tp2pp2", "tp8dp2ep16", "tp8adp2ep2", "tp4pp2@2nodes"])
def test_canonical_string_round_trips(layout):
    assert str(parse(layout)) == layout
    assert parse(str(parse(layout))) == parse(layout)


def test_ranks_are_placed_evenly_in_node_order():
    layout = parse("tp4pp2@2nodes")
    assert layout.gpus_per_node == 4
    assert [list(r) for r in layout.ranks_by_node()] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("text, rule, words", [
    ("tp", "syntax", "tp needs a size"),
    ("tp2xp2", "syntax", "at 'xp2'"),
    ("tp2tp4", "syntax", "names tp twice"),
    ("", "syntax", "empty"),
    ("tp0", "positive-sizes", "tp must be a positive integer"),
    ("tp3@2nodes", "even-node-split", "cannot be split evenly over 2 nodes"),
    ({"tp": 2, "sp": 2}, "syntax", "unknown layout keys ['sp']"),
    ({"tp": "2"}, "positive-sizes", "tp must be a positive integer"),
    (42, "syntax", "a layout is a string"),
])
def test_invalid_layouts_name_the_rule(text, rule, words):
    with pytest.raises(LayoutError) as caught:
        parse(text)
    assert caught.value.rule == rule
    assert words in str(caught.value)
    assert f"[rule: {rule}]" in str(caught.value)
