"""The soak's table (one row per sample) and its summary, printed last as one JSON line.

Latency windows are by event time: "first minute" is the events made in the
load's first 60 s, "last minute" those made in its last 60 s. An event the
client never received counts with the time from its making to the end of
the run, a lower bound of its latency, so a client that stopped receiving
cannot look fast; ``soak_unreceived_last_minute`` says how many there were.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .report import _columns
from .soak_client import SoakClient
from .soak_load import PhotoTrickle, SoakSource
from .soak_sampler import SOAK, Sample, percentile
from .soak_stack import BROKER
from .usage import OTHER

# Item 2's targets for the embedded default, shown beside the figures.
TARGETS: dict[str, tuple[str, float]] = {
    "soak_p99_growth": ("<=", 1.5),
    "soak_idle_broker_cpu_pct": ("<=", 10.0),
    "soak_broker_rss_mb_max": ("<=", 1024.0),
    "soak_lost": ("<=", 0),
    "soak_max_behind_s": ("<=", 1.0),
}
WORKERS = ("analytics", "notifications", "relay")


@dataclass
class SoakRun:
    """Everything the summary is computed from."""

    source: SoakSource
    client: SoakClient
    trickle: PhotoTrickle
    samples: list[Sample]
    rate: float
    planned: int
    idle_cpu: dict[str, float]
    end: float  # epoch seconds when the run stopped watching
    analytics_rows: int
    log_bytes: int
    wall_s: float
    settings: dict[str, str] = field(default_factory=dict)


def window_latencies(run: SoakRun, first: float, last: float) -> tuple[list[float], int]:
    """Latencies (ms) of the events made in [first, last), and how many of them never
    arrived (counted up to the end of the run)."""
    times, arrived = run.source.times, run.client.received_at
    latencies, unreceived = [], 0
    for number in range(run.source.produced):
        made = times[number]
        if first <= made < last and number not in run.source.failed:
            if arrived[number]:
                latencies.append((arrived[number] - made) * 1000)
            else:
                latencies.append((run.end - made) * 1000)
                unreceived += 1
    return latencies, unreceived


def summary(run: SoakRun) -> dict[str, Any]:
    produced = run.source.produced
    start = run.source.times[0] if produced else run.end
    stop = run.source.times[produced - 1] if produced else run.end
    first, _ = window_latencies(run, start, start + 60)
    last, unreceived_last = window_latencies(run, stop - 60, stop + 1)
    p99_first, p99_last = percentile(first, 0.99), percentile(last, 0.99)
    lost_posts = [post for post in run.trickle.sent_at if post not in run.client.post_arrivals]
    load = [sample for sample in run.samples if sample.phase == "load"] or run.samples
    post_latencies = [
        (run.client.post_arrivals[post] - sent) * 1000
        for post, sent in run.trickle.sent_at.items()
        if post in run.client.post_arrivals
    ]
    figures: dict[str, Any] = {
        "soak_events": run.source.acknowledged,
        "soak_events_planned": run.planned,
        "soak_rate": run.rate,
        "soak_posts": len(run.trickle.sent_at),
        "soak_posts_refused": len(run.trickle.refused),
        "soak_p50_ms_first_minute": percentile(first, 0.5),
        "soak_p99_ms_first_minute": p99_first,
        "soak_p99_ms_last_minute": p99_last,
        "soak_p99_growth": p99_last / p99_first if p99_first else math.nan,
        "soak_unreceived_last_minute": unreceived_last,
        "soak_max_behind_s": max((s.behind_s for s in load), default=math.nan),
        "soak_max_lag": max((s.lag for s in run.samples), default=0),
        "soak_idle_broker_cpu_pct": run.idle_cpu.get(BROKER, math.nan),
        "soak_idle_web_cpu_pct": run.idle_cpu.get("web", math.nan),
        "soak_broker_cpu_pct_max": max((s.cpu.get(BROKER, 0.0) for s in run.samples), default=0),
        "soak_broker_rss_mb_max": max((s.broker_rss_mb for s in run.samples), default=math.nan),
        "soak_web_rss_mb_max": max((s.web_rss_mb for s in run.samples), default=math.nan),
        "soak_lost": len(run.client.missing()) + len(lost_posts),
        "soak_lost_posts": len(lost_posts),
        # When the first lost events were made (s into the load): a start, a moment, or the end.
        "soak_lost_first_at_s": [
            round(run.source.times[number] - start, 2) for number in run.client.missing()[:5]
        ],
        "soak_post_to_screen_p99_ms": percentile(post_latencies, 0.99),
        "soak_gap_missed": run.client.gap_missed,
        "soak_duplicates": run.client.duplicates,
        "soak_client_closes": [close.code for close in run.client.closes],
        "soak_analytics_rows": run.analytics_rows,
        "soak_analytics_expected": run.source.acknowledged,
        "soak_log_mb": run.log_bytes / 1024 / 1024,
        "soak_other_cpu_pct_mean": _mean([s.cpu.get(OTHER, math.nan) for s in run.samples]),
        "soak_wall_s": run.wall_s,
    }
    return {key: _rounded(value) for key, value in figures.items()}


def checks(figures: dict[str, Any]) -> list[str]:
    """What must hold whatever the performance: nothing lost, analytics complete."""
    problems = []
    if figures["soak_lost"]:
        problems.append(f"{figures['soak_lost']} events never reached the dashboard client")
    if figures["soak_analytics_rows"] != figures["soak_analytics_expected"]:
        problems.append(
            f"analytics stored {figures['soak_analytics_rows']} of"
            f" {figures['soak_analytics_expected']} events"
        )
    if figures["soak_events"] < figures["soak_events_planned"]:
        problems.append(
            f"only {figures['soak_events']} of {figures['soak_events_planned']} events"
            " were acknowledged in the time allowed"
        )
    return problems


def table(run: SoakRun) -> str:
    rows = [
        (
            "t (s)",
            "phase",
            "made",
            "received",
            "lag",
            "behind s",
            "p50 ms",
            "p99 ms",
            "broker %",
            "broker MB",
            "web %",
            "web MB",
            "workers %",
            "soak %",
            "other %",
            "analytics",
            "healthz",
        )
    ]
    for s in run.samples:
        workers = sum(s.cpu.get(name, 0.0) for name in WORKERS)
        rows.append(
            (
                f"{s.at:.0f}",
                s.phase,
                f"{s.produced:,}",
                f"{s.received:,}",
                f"{s.lag:,}",
                f"{s.behind_s:.1f}",
                _cell(s.p50_ms),
                _cell(s.p99_ms),
                _cell(s.cpu.get(BROKER, math.nan)),
                _cell(s.broker_rss_mb),
                _cell(s.cpu.get("web", math.nan)),
                _cell(s.web_rss_mb),
                _cell(workers),
                _cell(s.cpu.get(SOAK, math.nan)),
                _cell(s.cpu.get(OTHER, math.nan)),
                f"{s.analytics_rows:,}",
                str(s.healthz),
            )
        )
    return "\n".join(_columns(rows))


def targets(figures: dict[str, Any]) -> str:
    rows = [("figure", "value", "target", "met")]
    for key, (op, bound) in TARGETS.items():
        value = figures.get(key)
        met = "" if value is None else ("yes" if value <= bound else "NO")
        rows.append((key, str(value), f"{op} {bound:g}", met))
    return "\n".join(_columns(rows))


def samples(run: SoakRun) -> list[dict[str, Any]]:
    """Every sample as plain values (NaN as None), for saving beside the figures."""
    return [
        {key: _rounded(value) for key, value in asdict(sample).items()} | {"lag": sample.lag}
        for sample in run.samples
    ]


def json_line(figures: dict[str, Any]) -> str:
    return json.dumps(figures)


def _mean(values: list[float]) -> float:
    present = [value for value in values if not math.isnan(value)]
    return sum(present) / len(present) if present else math.nan


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 1) if abs(value) >= 10 else round(value, 3)
    return value
