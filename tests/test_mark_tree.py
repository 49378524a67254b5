"""The weighted dispatch trie: its codes form a full prefix code within the mask's bits, the
worst packet's tests plus its group's rules are the least any such code allows, and the chains
lead every group's mark to its own chain past exactly its code's tests."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from npc import pipeline
from npc.backends.base import Options
from npc.backends.iptables.mark_tree import Marks, Tree, canonical, code_lengths, links
from npc.backends.iptables.render import rules_per_packet, trees
from npc.networks import network_spec
from random_clusters import generated_cluster

weights_and_bits = st.integers(1, 11).flatmap(
    lambda bits: st.tuples(
        st.lists(st.integers(0, 40), min_size=1, max_size=min(2**bits, 300)), st.just(bits)
    )
)


def _kraft(lengths: list[int], bits: int) -> int:
    return sum(1 << (bits - n) for n in lengths)


@settings(max_examples=500, deadline=None)
@given(weights_and_bits)
def test_code_lengths_are_a_full_prefix_code_with_the_least_worst(case: tuple[list[int], int]) -> None:
    weights, bits = case
    lengths = code_lengths(weights, bits)
    if len(weights) == 1:
        assert lengths == [0]
        return
    assert all(1 <= n <= bits for n in lengths)
    assert _kraft(lengths, bits) == 1 << bits  # full: no test without two sides
    worst = max(w + n for w, n in zip(weights, lengths, strict=True))
    # no prefix code within the bits does better, and a balanced trie never does
    better = [min(bits, worst - 1 - w) for w in weights]
    assert min(better) < 1 or _kraft(better, bits) > 1 << bits
    assert worst <= max(weights) + math.ceil(math.log2(len(weights)))


@settings(max_examples=300, deadline=None)
@given(weights_and_bits)
def test_links_lead_each_code_to_its_own_chain(case: tuple[list[int], int]) -> None:
    weights, bits = case
    lengths = code_lengths(weights, bits)
    codes = canonical(lengths)
    tests = links(codes, lengths)
    assert sum(map(len, tests)) == len(codes) - 1  # one test per inner node of a full tree
    root = codes.index(0)
    for i, (code, n) in enumerate(zip(codes, lengths, strict=True)):
        at, met = root, 0
        while True:
            for depth, target in tests[at]:
                met += 1
                if code >> (n - 1 - depth) & 1:
                    at = target
                    break
            else:
                break
        assert (at, met) == (i, n)


def _walk(tree: Tree, mark: int) -> tuple[str, int]:
    by_name = {c.name: c for c in tree.chains}
    current, met = tree.chains[0], 0
    while True:
        for test in current.tests:
            met += 1
            if mark & test.mark:
                current = by_name[test.chain]
                break
        else:
            return current.name, met


def test_a_generated_cluster_s_tries_find_every_group(tmp_path: Path) -> None:
    """On the mixed generator's M: every group's mark, as the map set writes it, reaches the
    group's chain through its code's tests, codes differ in length, and the worst first packet
    meets at most 64 rules."""
    cluster = generated_cluster(tmp_path, seed=5, pod_seed=5, size="M", generator="generate_mixed")
    sources = pipeline.read_sources([str(cluster / "policies")], str(cluster / "inventory.json"))
    compiled = pipeline.build(sources, network_spec("default", None, None)).compiled
    marks = Marks.of(Options())
    found = trees(compiled.lowered, 4, marks)
    assert found and all(len(t.chains) > 8 for t in found.values())
    for t in found.values():
        assert all(_walk(t, c.mark) == (c.name, c.depth) for c in t.chains)
        assert len({c.mark for c in t.chains}) == len(t.chains)
        assert all(c.mark & ~marks.group(t.direction) == 0 for c in t.chains)
        assert len({c.depth for c in t.chains}) > 1  # weighted, not balanced
    assert rules_per_packet(compiled.lowered, compiled.members, marks) <= 64
