"""What the iptables backends (iptables, weave) call npc's objects in the kernel.

Chains and sets share one namespace of names with every other tool on the node, so npc's carry
its prefix and the network's tag (``lower.network_tag``): ``NPC-<tag>-`` chains, ``npc-<tag>-``
sets, and ``npt-<tag>-`` for the temporary sets an apply stages new contents in. ``lower``'s names
(``P-<digest>``, ``s4-<digest>``) follow the prefix unchanged. npc owns exactly these names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from ...ir import Direction

if TYPE_CHECKING:
    from ...lower import Lowered

ANY_CHAIN = re.compile(r"NPC-[a-z2-7]{5}-")  # any network's chains (``match``: a name's start)
ANY_SET = re.compile(r"npc-[a-z2-7]{5}-[snpmlt][046]-[a-z2-7]+")  # any network's sets (0: of no family)
_LIST = re.compile(r"np[ct]-[a-z2-7]{5}-l[46]-")  # a list:set (``render.ListSet``), or its temporary
ANY_JUMP = re.compile(  # exactly a jump npc writes (an older npc's had no conntrack match)
    r"-A FORWARD (-m conntrack ! --ctstate RELATED,ESTABLISHED )?"
    r'-m comment --comment "npc network [a-z0-9][a-z0-9./-]*" -j NPC-[a-z2-7]{5}-(FORWARD|MARK)'
)


@attrs.frozen
class Names:
    """One network's names."""

    tag: str
    # a program set the rules test under another kernel set's name (``render.everyone``)
    aliases: tuple[tuple[str, str], ...] = ()
    chain_prefix: str = attrs.field(init=False)
    set_prefix: str = attrs.field(init=False)
    temp_prefix: str = attrs.field(init=False)
    _aliased: dict[str, str] = attrs.field(init=False, eq=False, repr=False)

    @_aliased.default
    def _aliased_default(self) -> dict[str, str]:
        return dict(self.aliases)

    @chain_prefix.default
    def _chain_prefix(self) -> str:
        return f"NPC-{self.tag}-"

    @set_prefix.default
    def _set_prefix(self) -> str:
        return f"npc-{self.tag}-"

    @temp_prefix.default
    def _temp_prefix(self) -> str:
        return f"npt-{self.tag}-"

    def chain(self, name: str) -> str:
        """A chain of ``lower``'s (``P-<digest>``) or of the layout's (``FORWARD``, ``E4-0``)."""
        return self.chain_prefix + name

    def set(self, name: str) -> str:
        """A set of ``lower``'s (``s4-<digest>``) or of the layout's (``m4-<digest>``)."""
        return self.set_prefix + self._aliased.get(name, name)

    def temp(self, kernel_set: str) -> str:
        """Where apply stages new contents of the kernel's set ``kernel_set`` before the swap."""
        return self.temp_prefix + kernel_set.removeprefix(self.set_prefix)

    @property
    def forward(self) -> str:
        """The chain npc's FORWARD jump enters."""
        return self.chain("FORWARD")

    @property
    def mark(self) -> str:
        """An earlier npc's chain in table mangle that wrote the groups into the mark (its filter
        read them); a load removes it."""
        return self.chain("MARK")

    def direction(self, direction: Direction) -> str:
        """The dispatch chain of ``direction``: ``NPC-<tag>-EGRESS``, ``NPC-<tag>-INGRESS``."""
        return self.chain(direction.upper())


def destruction_order(sets: Iterable[str]) -> list[str]:
    """``sets`` with the lists first: the kernel refuses to destroy a set a list holds."""
    return sorted(sets, key=lambda name: (not _LIST.match(name), name))


def names_of(lowered: Lowered) -> Names:
    return Names(lowered.tag)
