"""The report: one table per kind (and per scenario), columns figure, ours, baseline, floor,
ratio, target, PASS/FAIL. A row's verdict is computed from measured values only; a row without
a target shows "-"."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

COLUMNS = ("figure", "ours", "baseline", "floor", "ratio", "target", "result")


def num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def per(value: float | None, count: float | None) -> float | None:
    if value is None or not count:
        return None
    return value / count


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


@dataclass
class Row:
    figure: str
    ours: str = "-"
    baseline: str = "-"
    floor: str = "-"
    ratio: str = "-"
    target: str = "-"
    ok: bool | None = None

    def cells(self) -> list[str]:
        verdict = "-" if self.ok is None else ("PASS" if self.ok else "FAIL")
        return [self.figure, self.ours, self.baseline, self.floor, self.ratio, self.target, verdict]


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def render(self) -> str:
        table = [list(COLUMNS)] + [r.cells() for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
        lines = [f"== {self.title}"]
        for index, row in enumerate(table):
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"   {note}" for note in self.notes]
        return "\n".join(lines)

    def failures(self) -> list[str]:
        return [
            f"{self.title}: {r.figure} = ours {r.ours}, ratio {r.ratio} (target {r.target})"
            for r in self.rows
            if r.ok is False
        ]
