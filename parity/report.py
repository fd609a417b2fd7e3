"""A check's report: its rows (one Comparison per compared tensor), grouped by the model component
each belongs to, with the notes, the per-kind largest errors and the verdict."""

from __future__ import annotations

import dataclasses

from parity.outputs import component_of
from parity.tolerances import ZERO_GRADIENT, Comparison, share


@dataclasses.dataclass
class Report:
    dtype: str
    rows: list[Comparison]
    notes: list[str] = dataclasses.field(default_factory=list)
    step_norms: dict[int, float] = dataclasses.field(default_factory=dict)  # reference's pre-clip norms
    error: str | None = None  # the implementation under test raised: the last row says where

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def first_failure(self) -> Comparison | None:
        return next((r for r in self.rows if not r.ok), None)

    def worst(self) -> dict[str, tuple[float, float]]:
        """Largest (max abs, rel to max|ref|) error per kind of tensor: the measured drift.

        The W_key biases are left out: their true gradient is 0, so their relative error is
        round-off over round-off."""
        kinds = ("trf_blocks", "logits", "loss", "grad", "step", "param", "adam m", "adam v")
        out: dict[str, tuple[float, float]] = {}
        for row in self.rows:
            if any(z in row.name for z in ZERO_GRADIENT):
                continue
            kind = next((k for k in kinds if row.name.startswith(k)), row.name.split()[0])
            a, r = out.get(kind, (0.0, 0.0))
            out[kind] = (max(a, row.max_abs), max(r, row.max_rel))
        return out

    def by_component(self) -> dict[str, list[Comparison]]:
        """The rows grouped by the model component they belong to (forward order kept inside
        each group; groups in the order they first appear)."""
        groups: dict[str, list[Comparison]] = {}
        for row in self.rows:
            groups.setdefault(component_of(row.name), []).append(row)
        return groups

    def table(self) -> str:
        head = f"{'tensor':<44} {'shape':>12} {'max abs':>10} {'rel/max|ref|':>10}  {'tolerance':<16} {'used':>5} pass"
        lines = []
        for component, rows in self.by_component().items():
            lines += [f"-- {component}", *(r.row() for r in rows)]
        return "\n".join([head, "-" * len(head), *lines, *self.notes])

    def summary(self, notes: bool = True) -> str:
        """One line per component: how many tensors, the verdict, the largest relative error (then
        the notes, unless ``notes`` is False)."""
        lines = []
        for component, rows in self.by_component().items():
            bad = [r for r in rows if not r.ok]
            worst = max((r.max_rel for r in rows if not any(z in r.name for z in ZERO_GRADIENT)), default=0.0)
            verdict = f"FAIL ({len(bad)}; first {bad[0].name})" if bad else "PASS"
            used = max((r.used for r in rows), default=0.0)
            lines.append(
                f"{component:<26} {len(rows):5d} tensors  {verdict}  largest rel {worst:.1e}, "
                f"of the tolerance {share(used)}"
            )
        return "\n".join([*lines, *(self.notes if notes else [])])
