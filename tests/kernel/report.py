"""Readable failure reports: expected and observed matrices side by side, then each wrong cell."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .case import Case, Check

if TYPE_CHECKING:
    from .cluster import Observation

_WORDS = {".": "allowed", "X": "denied", "E": "error", "?": "not checked"}


def diff_report(
    case: Case,
    check: Check,
    observed: Sequence[str],
    details: Mapping[tuple[int, int], str] | None = None,
    observed_title: str = "observed",
) -> str:
    """An empty string when ``observed`` agrees with ``check.expect`` on every checked cell."""
    wrong = [
        (i, j)
        for i, row in enumerate(check.expect)
        for j, want in enumerate(row)
        if want != "?" and observed[i][j] != want
    ]
    if not wrong:
        return ""
    size = len(check.expect)
    width = max(size, len("expected"), len(observed_title))
    lines = [
        f"{check.label}: {len(wrong)} cell(s) differ  (row = from, column = to)",
        f"      {'expected':<{width}}  {observed_title:<{width}}  pod",
    ]
    bad_rows = {i for i, _ in wrong}
    for e in case.endpoints:
        i = e.index
        marker = "<-" if i in bad_rows else "  "
        external = " (external)" if e.external else ""
        lines.append(
            f"  {i:>2}  {check.expect[i]:<{width}}  {observed[i]:<{width}}  {marker} {e.ref}{external}"
        )
    for i, j in wrong:
        src, dst = case.endpoints[i], case.endpoints[j]
        src_addr, dst_addr = (
            src.address(check.family, check.network),
            dst.address(check.family, check.network),
        )
        extra = f" ({details[(i, j)]})" if details and (i, j) in details else ""
        lines.append(
            f"  {src.ref} [{src_addr}] -> {dst.ref} [{dst_addr}] {check.protocol}/{check.port}: "
            f"expected {_WORDS[check.expect[i][j]]}, {observed_title} {_WORDS[observed[i][j]]}{extra}"
        )
    return "\n".join(lines)


def observations_report(case: Case, observations: Iterable[Observation]) -> str:
    """Every check's differences, one block each; an empty string when every probed cell agrees."""
    reports = [diff_report(case, o.check, o.observed, o.details) for o in observations]
    return "\n\n".join(r for r in reports if r)
