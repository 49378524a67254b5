"""Each network's inventory built in a forked child while this process optimises and lowers.

Rules depend on the policies only and set members on the inventory only, so nothing the passes
or ``lower`` do waits for the pods. At L (50k pods) decoding, parsing and building the inventory
is 2-3 s of one core, and the compile's other core sat idle meanwhile: a forked child now does it
beside the passes and lowering, and sends the inventories back pickled (a fifth of building them).

The child only builds: whatever goes wrong in it (a malformed object, invalid JSON, a crash) it
reports as nothing, and the caller reads the inventory itself, raising the error exactly as without
a child. The caller gives the policies their inventory only afterwards, so it compiles them as if
no namespace carried the 1.6 isolation annotation, and compiles a network again where the built
inventory says otherwise; ``worth_it`` does not fork where that is likely.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import operator
import pickle
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from .forked import in_child, spare_core
from .frontends.annotation import NAMESPACE_ISOLATION_ANNOTATION
from .inventory import Inventory, NamedPort, Namespace, Pod, build_inventory, inventory_documents
from .networks import NetworkSpec

MIN_BYTES = 4 << 20  # about 2,500 pods: below this a second process costs more than it saves

# A backslash escape that could spell a letter, '.', '/' or '-' of the annotation's key (JSON's
# \u and \/, YAML's \x, \U and a line joined by \ and a newline): where one occurs, a search of
# the bytes for the key proves nothing.
_SPELLING_ESCAPE = re.compile(rb'\\[^"\\nrtbf0 ]')


@attrs.frozen
class Built:
    """What the child sends back: the inventory's hash (for the manifest) and, per network in
    order, its inventory and the address source's warnings."""

    sha256: str
    networks: tuple[tuple[Inventory, tuple[str, ...]], ...]


Result = Callable[[], Built | None]  # None: the child built nothing; read the inventory yourself


def worth_it(data: bytes) -> bool:
    """Enough bytes, fork safe (one thread), a core idle, and no namespace likely to carry the 1.6
    annotation (its isolation policies belong to the program the parent lowers meanwhile)."""
    if len(data) < MIN_BYTES:
        return False
    if NAMESPACE_ISOLATION_ANNOTATION.encode() in data or _SPELLING_ESCAPE.search(data):
        return False
    return spare_core()


Reduce = Callable[[Any], tuple[Callable[..., Any], tuple[Any, ...]]]


def _reducer(cls: type) -> Reduce:
    """Pickle an attrs class as its constructor's arguments: attrs' own ``__getstate__`` builds a
    dict per object (at L 150k pods and ports: 1.2 s to pickle, 0.55 s to load, against 0.7, 0.37)."""
    get = operator.attrgetter(*(field.name for field in attrs.fields(cls)))
    return lambda obj: (cls, get(obj))


_DISPATCH: dict[type, Reduce] = {cls: _reducer(cls) for cls in (Inventory, Namespace, Pod, NamedPort)}


def _pickled(built: Built) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, **_DISPATCH}
    pickler.dump(built)
    return buffer.getvalue()


def _built(data: bytes, name: str, networks: Sequence[NetworkSpec], lenient: bool) -> bytes:
    """The child's work: the inventory of each network, pickled."""
    found = inventory_documents(data, name)
    built = []
    for network in networks:
        address_source = network.address_source()
        inventory = build_inventory(
            found.documents, address_source, name, found.text, lenient=lenient, whole=True
        )
        built.append((inventory, tuple(address_source.warnings)))
    return _pickled(Built(found.sha256, tuple(built)))


@contextlib.contextmanager
def inventories_ahead(
    data: bytes, name: str, networks: Sequence[NetworkSpec], lenient: bool
) -> Iterator[Result]:
    """``data``: the inventory file's bytes, as ``read_bytes`` read them; ``name`` as errors name
    it. Inside the block, ``result()`` waits for the child and gives what it built, or None."""
    with in_child(lambda: _built(data, name, networks, lenient)) as blob:

        def result() -> Built | None:
            found = blob()
            built = pickle.loads(found) if found is not None else None
            return built if isinstance(built, Built) and len(built.networks) == len(networks) else None

        yield result
