"""Results of each scenario, the readable table, and the one-line JSON summary."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

# The keys of the JSON line, in order, with their targets.
TARGETS: dict[str, str] = {
    "fanout_deliveries_per_s": ">= 300000",
    "fanout_vs_naive": ">= 50",
    "fanout_p99_ms": "<= 100",
    "fanout_p50_ms": "<= 25",
    "post_to_screen_p99_ms": "<= 60",
    "post_to_screen_p50_ms": "<= 20",
    "posts_per_s": ">= 200",
    "post_emit_overhead": "<= 0.10",
    "analytics_events_per_s": ">= 20000",
    "analytics_vs_naive": ">= 15",
    "slow_client_rss_growth_mb": "<= 50",
    "slow_client_others_p99_ratio": "<= 1.5",
}


@dataclass
class Figure:
    label: str
    value: float | None
    unit: str = ""
    key: str | None = None  # a key of the JSON line, or None for context

    @property
    def target(self) -> str:
        return TARGETS.get(self.key or "", "")

    def meets_target(self) -> bool | None:
        if not self.target or self.value is None or math.isnan(self.value):
            return None
        op, bound = self.target.split()
        return self.value >= float(bound) if op == ">=" else self.value <= float(bound)


@dataclass
class ScenarioResult:
    name: str
    figures: list[Figure] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failure: str | None = None

    def add(self, label: str, value: float | None, unit: str = "", key: str | None = None) -> None:
        self.figures.append(Figure(label, value, unit, key))

    def value(self, key: str) -> float | None:
        for figure in self.figures:
            if figure.key == key:
                return figure.value
        return None


@dataclass
class Report:
    results: list[ScenarioResult] = field(default_factory=list)
    header: list[str] = field(default_factory=list)

    def value(self, key: str) -> float | None:
        """A figure for the JSON line; None if missing or its scenario failed a check."""
        for result in self.results:
            found = result.value(key)
            if found is not None:
                return None if result.failure else found
        return None

    @property
    def failures(self) -> list[ScenarioResult]:
        return [result for result in self.results if result.failure]

    def json_line(self) -> str:
        summary = {}
        for key in TARGETS:
            value = self.value(key)
            summary[key] = None if value is None or math.isnan(value) else _round(value)
        return json.dumps(summary)

    def table(self) -> str:
        lines = [*self.header, ""]
        rows = [("scenario", "figure", "value", "target", "met")]
        for result in self.results:
            name = result.name + (" [CHECK FAILED]" if result.failure else "")
            for figure in result.figures:
                met = figure.meets_target()
                rows.append(
                    (
                        name,
                        figure.key or figure.label,
                        _format(figure.value, figure.unit),
                        figure.target,
                        "" if met is None else ("yes" if met else "NO"),
                    )
                )
                name = ""
        lines.extend(_columns(rows))
        processes = sorted({name for result in self.results for name in result.cpu})
        if processes:
            lines.append("")
            lines.extend(self._cpu_table(processes))
        notes = [(result.name, note) for result in self.results for note in result.notes]
        if notes:
            lines.append("")
            lines.append("notes:")
            lines.extend(f"- {name}: {note}" for name, note in notes)
        for result in self.failures:
            lines.append(f"CHECK FAILED in {result.name}: {result.failure}")
        return os.linesep.join(lines)

    def _cpu_table(self, processes: list[str]) -> list[str]:
        rows = [("CPU, % of one core (200 = both)", *processes)]
        for result in self.results:
            if result.cpu:
                cells = (f"{result.cpu[p]:.0f}" if p in result.cpu else "-" for p in processes)
                rows.append((result.name, *cells))
        return _columns(rows)


def _round(value: float) -> float:
    if abs(value) >= 1000:
        return round(value)
    if abs(value) >= 10:
        return round(value, 1)
    return round(value, 3)


def _format(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if isinstance(value, int):
        text = f"{value:,}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for index, row in enumerate(rows):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return [line.rstrip() for line in out]
