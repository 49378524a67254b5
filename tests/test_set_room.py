"""A first load creates every set from its header before reading a member
(``render.SetMaker``): the header must be the set itself, members aside, or the kernel would
hold sets sized unlike the artefacts. ``Resolved.room`` counts pods' addresses instead of
working the members out."""

from __future__ import annotations

import pytest
from hypothesis import given
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import set_makers
from npc.inventory import Inventory
from npc.ir import PodPeer, Program
from npc.lower import SetSpec
from npc.pipeline import compile_program
from npc.resolve import Entry, Resolver
from random_clusters import inventories, programs


@given(program=programs, inventory=inventories())
def test_a_header_is_its_set_without_members(program: Program, inventory: Inventory) -> None:
    compiled = compile_program(program, inventory)
    for marks in (Marks(), Marks(egress=0, ingress=0)):  # by group, and flat (Weave's)
        for maker in set_makers(compiled.lowered, compiled.members, marks):
            header, made = maker.header(), maker.make()
            assert header.members == () or header == made
            assert attrs_but_members(header) == attrs_but_members(made)
    addresses = [ip for pod in inventory.pods for ip in pod.ips]
    shared = len(set(addresses)) < len(addresses)  # then a room may count an address twice
    for family in compiled.lowered.families:
        for spec in family.sets:
            room, held = compiled.members.room(spec.name), len(compiled.members[spec.name])
            assert room >= held if shared else room == held, spec


def attrs_but_members(text: object) -> tuple[object, ...]:
    return tuple(getattr(text, f) for f in ("name", "type", "family", "hashsize", "maxelem", "options"))


def test_headers_read_no_pod_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an ``ipBlock`` set (from the policies alone) is worked out for its header."""
    from test_set_parts import INVENTORY, PROGRAM

    asked: list[SetSpec] = []
    members = Resolver.members

    def counting(self: Resolver, spec: SetSpec, scope: tuple[PodPeer, ...] | None = None) -> list[Entry]:
        asked.append(spec)
        return members(self, spec, scope)

    monkeypatch.setattr(Resolver, "members", counting)
    compiled = compile_program(PROGRAM, INVENTORY)
    makers = set_makers(compiled.lowered, compiled.members, Marks())
    for maker in makers:
        maker.header()
    assert all(spec.kind == "net" for spec in asked)
    assert len(makers) > 3
