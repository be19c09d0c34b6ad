"""The pass criteria, the Markdown report and the plot of `recsys bench soak` (pure: computed
from the samples the run took, no I/O but the plot file).

A sample (`recsys.bench.soak.take_sample`) is one window of the run: `t_s` (its end, seconds
since the load started), `rss_bytes` and `fds` per process label ("api worker 1234"),
`redis_used_memory` and `kafka_lag` (None while a fault has Redis or the broker stopped), the
window's requests (`sent`, `answered`, `5xx`, `failed`)
and latency (`latency_ms`: p50, p99), and the freshness probes that ended in it
(`freshness_ms`: p50, p99, `n`, `timeouts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

GROWTH_LIMIT_PERCENT_PER_HOUR = 5.0
# A process's RSS series is judged when it covers at least this share of the measured period
# (after the warm-up): a process started by a fault late in the run is too short to extrapolate.
MIN_SPAN_SHARE = 1 / 3
MIN_SAMPLES = 5
# "Trending up": the median of the per-window values in the last third of the measured period
# above the first third's by more than TREND_RATIO times AND by more than the floor (the floors
# keep a shared machine's noise on small figures from failing the run).
TREND_RATIO = 1.5
TREND_FLOOR = {"latency_p99_ms": 5.0, "freshness_p99_ms": 50.0}
# Processes recorded but not judged: the load generator is the benchmark, not the product.
NOT_JUDGED = ("load client",)
# Below this measured period the growth figure is reported with a warning (a smoke run).
MEANINGFUL_GROWTH_S = 20 * 60


# --- Pure figures ------------------------------------------------------------------------------


def growth_percent_per_hour(t_s: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares line through (t, value), as percent per hour of its value at the first
    time: +5.0 means the line rises by 5 % of its starting level every hour."""
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.size < 2 or np.ptp(t) == 0:
        return float("nan")
    slope, intercept = np.polyfit(t, v, 1)
    base = slope * t[0] + intercept
    return float(slope * 3600.0 / base * 100.0) if base > 0 else float("nan")


def memory_growth(
    samples: Sequence[Mapping[str, Any]], warmup_s: float, end_s: float
) -> dict[str, dict[str, Any]]:
    """Per process label: its RSS growth in % per hour after the warm-up, whether it is judged
    (long enough a series, not the load client) and whether it is under the limit.

    A process started during the run (a fault's replacement) warms up as the others did at the
    start (imports, caches, the model, the allocator's arenas): its own first `warmup_s` are
    left out too, or its start-up would read as a leak."""
    measured_s = max(end_s - warmup_s, 0.0)
    first_t = samples[0]["t_s"] if samples else 0.0
    every: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        for label, rss in sample.get("rss_bytes", {}).items():
            every.setdefault(label, []).append((sample["t_s"], float(rss)))
    series: dict[str, list[tuple[float, float]]] = {}
    for label, points in every.items():
        born = points[0][0]
        start = warmup_s if born <= first_t else born + warmup_s
        kept = [(t, rss) for t, rss in points if t >= start]
        if kept:
            series[label] = kept
    growth: dict[str, dict[str, Any]] = {}
    for label, points in sorted(series.items()):
        t, rss = zip(*points, strict=True)
        span = t[-1] - t[0]
        long_enough = len(points) >= MIN_SAMPLES and span >= MIN_SPAN_SHARE * measured_s
        judged = long_enough and not label.startswith(NOT_JUDGED)
        percent = growth_percent_per_hour(t, rss)
        growth[label] = {
            "percent_per_hour": percent,
            "first_mb": rss[0] / 2**20,
            "last_mb": rss[-1] / 2**20,
            "samples": len(points),
            "span_s": span,
            "judged": judged,
            "why_not_judged": None
            if judged
            else ("the load generator" if long_enough else "series too short (restarted?)"),
            "passed": (not judged) or bool(percent < GROWTH_LIMIT_PERCENT_PER_HOUR),
        }
    return growth


def trend(
    samples: Sequence[Mapping[str, Any]],
    figure: str,
    percentile: str,
    warmup_s: float,
    floor: float,
) -> dict[str, Any]:
    """Whether the per-window `figure[percentile]` rises over the measured period: medians of
    the first and last thirds (robust to a few spiky windows), and the slope per hour."""
    points = [
        (s["t_s"], s[figure][percentile])
        for s in samples
        if s["t_s"] >= warmup_s and s.get(figure) and s[figure].get(percentile) is not None
    ]
    if len(points) < 3:
        return {
            "first_third": None,
            "last_third": None,
            "per_hour": None,
            "rising": False,
            "judged": False,
        }
    t = np.asarray([p[0] for p in points])
    v = np.asarray([p[1] for p in points])
    third = (t[-1] - t[0]) / 3
    first = float(np.median(v[t <= t[0] + third]))
    last = float(np.median(v[t >= t[-1] - third]))
    slope = float(np.polyfit(t, v, 1)[0] * 3600) if np.ptp(t) > 0 else 0.0
    rising = last > first * TREND_RATIO and last - first > floor
    return {
        "first_third": first,
        "last_third": last,
        "per_hour": slope,
        "rising": rising,
        "judged": True,
    }


def exactly_once(published: Mapping[str, int], applied: Mapping[str, int]) -> dict[str, Any]:
    """Events published per user (distinct ids on the event topics) against the events the
    worker applied per user (its per-user counter in Redis): lost and doubled, in events and
    users."""
    users = set(published) | set(applied)
    lost = doubled = users_lost = users_doubled = 0
    examples: list[dict[str, Any]] = []
    for user in sorted(users):
        want, got = published.get(user, 0), applied.get(user, 0)
        if got < want:
            lost += want - got
            users_lost += 1
        elif got > want:
            doubled += got - want
            users_doubled += 1
        if got != want and len(examples) < 10:
            examples.append({"user": user, "published": want, "applied": got})
    return {
        "users": len(users),
        "published": sum(published.values()),
        "applied": sum(applied.values()),
        "lost": lost,
        "doubled": doubled,
        "users_lost": users_lost,
        "users_doubled": users_doubled,
        "examples": examples,
    }


def fault_windows(
    faults: Sequence[Mapping[str, Any]], interval_s: float
) -> list[tuple[float, float]]:
    """(start, end) of each fault that ran: from its start to its recovery plus one window."""
    windows = []
    for fault in faults:
        if fault.get("run") and fault.get("at_s") is not None:
            recovery = fault.get("recovery_s") or 0.0
            windows.append((fault["at_s"], fault["at_s"] + recovery + 2 * interval_s))
    return windows


def _in_any(t_s: float, length_s: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(t_s - length_s < end and t_s > start for start, end in windows)


def request_failures(
    samples: Sequence[Mapping[str, Any]], windows: Sequence[tuple[float, float]], interval_s: float
) -> dict[str, int]:
    """5xx answers and failed requests (no answer: refused, reset, timed out), outside the
    faults' windows (those are each fault's row) and inside them."""
    counts = {"5xx": 0, "failed": 0, "5xx_in_faults": 0, "failed_in_faults": 0, "sent": 0}
    for s in samples:
        requests = s.get("requests", {})
        counts["sent"] += requests.get("sent", 0)
        suffix = "_in_faults" if _in_any(s["t_s"], interval_s, windows) else ""
        counts["5xx" + suffix] += requests.get("5xx", 0)
        counts["failed" + suffix] += requests.get("failed", 0)
    return counts


def requests_around(
    samples: Sequence[Mapping[str, Any]], start_s: float, end_s: float, interval_s: float
) -> dict[str, int]:
    """Requests sent, 5xx and failed in the windows that overlap [start_s, end_s]."""
    counts = {"sent": 0, "5xx": 0, "failed": 0}
    for s in samples:
        if _in_any(s["t_s"], interval_s, [(start_s, end_s)]):
            for key in counts:
                counts[key] += s.get("requests", {}).get(key, 0)
    return counts


def criteria(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The soak's pass criteria, each with what was measured and whether it passed."""
    growth = result["memory_growth"]
    judged = {k: g for k, g in growth.items() if g["judged"]}
    worst = max(judged.items(), key=lambda kv: kv[1]["percent_per_hour"], default=None)
    failing = sorted(k for k, g in judged.items() if not g["passed"])
    failures = result["request_failures"]
    once = result["exactly_once"]
    measured_min = result.get("measured_s", 0.0) / 60
    rows = [
        {
            "criterion": f"RSS growth of each process < {GROWTH_LIMIT_PERCENT_PER_HOUR:g} %/h "
            "after the warm-up",
            "measured": "no process judged"
            if worst is None
            else f"highest {worst[1]['percent_per_hour']:+.2f} %/h ({worst[0]})"
            + (f"; over the limit: {', '.join(failing)}" if failing else "")
            + (
                f" (measured over {measured_min:.0f} min only: an hourly rate extrapolated from "
                f"under {MEANINGFUL_GROWTH_S / 60:.0f} min is noise)"
                if measured_min * 60 < MEANINGFUL_GROWTH_S
                else ""
            ),
            "passed": bool(judged) and not failing,
        },
        {
            "criterion": "no 5xx and no failed request (outside the fault windows)",
            "measured": f"{failures['5xx']} 5xx, {failures['failed']} failed of "
            f"{failures['sent']:,} sent",
            "passed": failures["5xx"] == 0 and failures["failed"] == 0,
        },
        {
            "criterion": "every published event applied exactly once (per user)",
            "measured": f"{once['published']:,} published, {once['applied']:,} applied, "
            f"{once['lost']} lost ({once['users_lost']} users), {once['doubled']} doubled "
            f"({once['users_doubled']} users)",
            "passed": once["lost"] == 0 and once["doubled"] == 0 and once["published"] > 0,
        },
    ]
    archive = result.get("archive")
    if archive is not None:
        rows.append(
            {
                "criterion": "every published event archived exactly once (per user)",
                "measured": f"{archive['applied']:,} archived, {archive['lost']} lost "
                f"({archive['users_lost']} users), {archive['duplicate_rows']} rows repeating "
                "an event id",
                "passed": archive["lost"] == 0
                and archive["doubled"] == 0
                and archive["duplicate_rows"] == 0
                and archive["published"] > 0,
            }
        )
    for name, label, unit in (
        ("latency_p99_ms", "p99 latency", "ms"),
        ("freshness_p99_ms", "p99 freshness", "ms"),
    ):
        t = result["trends"][name]
        rows.append(
            {
                "criterion": f"{label} not trending up (last third's median window over the "
                f"first's by > {TREND_RATIO:g}x and > {TREND_FLOOR[name]:g} {unit} fails)",
                "measured": "too few windows"
                if not t["judged"]
                else f"{t['first_third']:.1f} -> {t['last_third']:.1f} {unit} "
                f"(slope {t['per_hour']:+.1f} {unit}/h)",
                "passed": t["judged"] and not t["rising"],
            }
        )
    return rows


def evaluate(
    samples: Sequence[Mapping[str, Any]],
    faults: Sequence[Mapping[str, Any]],
    published: Mapping[str, int],
    applied: Mapping[str, int],
    warmup_s: float,
    interval_s: float,
    archived: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every figure the criteria read, the criteria and the verdict. `archived`: the archive's
    distinct event ids per user (`per_user`) and its rows that repeat an id
    (`duplicate_rows`), when the run checked the archive."""
    end_s = samples[-1]["t_s"] if samples else 0.0
    windows = fault_windows(faults, interval_s)
    # Windows hit by a fault are left out of the trends too: a spike there is the fault's row.
    steady = [s for s in samples if not _in_any(s["t_s"], interval_s, windows)]
    figures: dict[str, Any] = {
        "measured_s": max(end_s - warmup_s, 0.0),
        "memory_growth": memory_growth(samples, warmup_s, end_s),
        "request_failures": request_failures(samples, windows, interval_s),
        "exactly_once": exactly_once(published, applied),
        "archive": None
        if archived is None
        else exactly_once(published, archived["per_user"])
        | {"duplicate_rows": archived["duplicate_rows"]},
        "trends": {
            "latency_p99_ms": trend(
                steady, "latency_ms", "p99", warmup_s, TREND_FLOOR["latency_p99_ms"]
            ),
            "freshness_p99_ms": trend(
                steady, "freshness_ms", "p99", warmup_s, TREND_FLOOR["freshness_p99_ms"]
            ),
        },
    }
    rows = criteria(figures)
    return figures | {"criteria": rows, "passed": all(r["passed"] for r in rows)}


# --- Markdown ----------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def _criteria_table(verdict: Mapping[str, Any]) -> list[str]:
    lines = ["| criterion | measured | |", "|---|---|---|"]
    for row in verdict["criteria"]:
        mark = "pass" if row["passed"] else "**FAIL**"
        lines.append(f"| {row['criterion']} | {row['measured']} | {mark} |")
    return lines


def _growth_table(verdict: Mapping[str, Any]) -> list[str]:
    lines = [
        "| process | RSS after warm-up -> end (MB) | growth %/h | judged |",
        "|---|---|---|---|",
    ]
    for label, g in verdict["memory_growth"].items():
        judged = ("pass" if g["passed"] else "**FAIL**") if g["judged"] else g["why_not_judged"]
        lines.append(
            f"| {label} | {g['first_mb']:.0f} -> {g['last_mb']:.0f} | "
            f"{g['percent_per_hour']:+.2f} | {judged} |"
        )
    return lines


def _fault_table(faults: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| fault | at (s) | recovery (s) | requests sent / 5xx / failed around it | "
        "events lost / doubled | detail |",
        "|---|---|---|---|---|---|",
    ]
    for f in faults:
        if not f.get("run"):
            lines.append(f"| {f['fault']} | not run | | | | {f.get('detail', '')} |")
            continue
        around = f.get("requests") or {}
        lines.append(
            f"| {f['fault']} | {_fmt(f.get('at_s'))} | {_fmt(f.get('recovery_s'))} | "
            f"{around.get('sent', 0):,} / {around.get('5xx', 0)} / {around.get('failed', 0)} | "
            f"{f.get('lost', '—')} / {f.get('doubled', '—')} | {f.get('detail', '')} |"
        )
    return lines


def _archive_sentence(archive: Mapping[str, Any] | None) -> str:
    if archive is None:
        return ""
    return (
        " The archive (its Delta table, once it held as many rows as were published or after "
        "5 minutes) was counted the same way: distinct event ids per user against those "
        "published, and rows repeating an id."
        + (f" Mismatches (first ones): {archive['examples']}" if archive["examples"] else "")
    )


def markdown(result: Mapping[str, Any], plot_name: str) -> str:
    config, verdict, rates = result["config"], result["verdict"], result["rates"]
    once = verdict["exactly_once"]
    lines = [
        "# Soak: the whole local stack under mixed load over time",
        "",
        "{header}",
        f"**{'PASSED' if verdict['passed'] else 'FAILED'}** after {result['seconds'] / 60:.1f} "
        f"minutes of load ({result['warmup_s'] / 60:.1f} min warm-up left out of the growth "
        "and trend figures), one sample every "
        f"{config['interval_s']:g} s ({len(result['samples'])} samples).",
        "",
        "Throwaway local Kafka and Redis, one `recsys worker`, `recsys serve` with "
        f"{config['api_workers']} workers, `recsys archive run`, the embedded Qdrant shard of a "
        f"model trained on `{result['dataset']}`; impressions recorded for every answer.",
        "",
        "| load | offered | achieved | measured saturation | share |",
        "|---|---|---|---|---|",
        f"| GET /recommend (fixed-rate open-loop client) | {config['request_rate']:,} /s | "
        f"{rates['requests_per_s']:,.0f} /s | {rates['api_saturation']:,} /s | "
        f"{config['request_rate'] / rates['api_saturation']:.0%} |",
        f"| events (`recsys simulate --users {config['users']}`) | {config['event_rate']:,} /s | "
        f"{rates['events_per_s']:,.0f} /s | {rates['stream_saturation']:,} /s | "
        f"{config['event_rate'] / rates['stream_saturation']:.0%} |",
        f"| freshness probes (a purchase of a new user, then GET /recommend until personalized) "
        f"| 1 per {config['probe_interval_s']:g} s | {rates['probes']:,} probes | | |",
        "",
        "Half of each measured saturation at once is more than this 2-core machine runs: the "
        "saturation figures were each measured with the whole machine to one component, and "
        "here the API, the worker, Kafka, Redis, the archiver, the simulator and the load "
        "client share it. The rates above are ones the stack sustains together.",
        "",
        "## Pass criteria",
        "",
        *_criteria_table(verdict),
        "",
        f"Exactly once: after the load stopped and the worker drained (lag 0), every event "
        f"topic was read back from the start and its distinct event ids counted per user; "
        f"{once['users']:,} users, each compared with the worker's per-user counter in Redis."
        + (f" Mismatches (first ones): {once['examples']}" if once["examples"] else "")
        + _archive_sentence(verdict.get("archive")),
        "",
        "## Memory per process",
        "",
        f"A least-squares line through each process's RSS after the warm-up, as % of its "
        f"starting level per hour; a series shorter than {MIN_SPAN_SHARE:.0%} of the measured "
        "period (a process a fault started) is not extrapolated.",
        "",
        *_growth_table(verdict),
        "",
        f"Redis `used_memory`: {_fmt(result['redis_memory_mb']['first'])} -> "
        f"{_fmt(result['redis_memory_mb']['last'])} MB after the warm-up (its data grows with "
        "new users: the probes make one each).",
        "",
        "## Faults",
        "",
    ]
    if result["faults"]:
        lines += [
            "Each fault at its time during the load; recovery as its row says; requests counted "
            "in the sample windows that overlap the fault and its recovery; events lost or "
            "doubled from the end-of-run per-user check (it covers every fault at once).",
            "",
            *_fault_table(result["faults"]),
        ]
    else:
        lines.append("Run without `--faults`.")
    lines += ["", f"![soak over time]({plot_name})", ""]
    return "\n".join(lines)


# --- Plot --------------------------------------------------------------------------------------


def _by_process(samples: Sequence[Mapping[str, Any]], field: str) -> dict[str, list[Any]]:
    series: dict[str, list[Any]] = {}
    for s in samples:
        for label, value in s.get(field, {}).items():
            series.setdefault(label, []).append((s["t_s"] / 60, value))
    return series


def _scaled(value: float | None, factor: float) -> float:
    return float("nan") if value is None else value * factor


def plot(result: Mapping[str, Any], path: Path) -> None:
    samples = result["samples"]
    t = [s["t_s"] / 60 for s in samples]
    figure, axes = plt.subplots(3, 2, figsize=(13, 11), sharex=True)
    rss, fds = axes[0]
    for label, points in sorted(_by_process(samples, "rss_bytes").items()):
        x, y = zip(*points, strict=True)
        rss.plot(x, [v / 2**20 for v in y], label=label, linewidth=1)
    rss.set_ylabel("RSS (MB)")
    rss.set_yscale("log")
    rss.legend(fontsize=6, ncol=2)
    for label, points in sorted(_by_process(samples, "fds").items()):
        x, y = zip(*points, strict=True)
        fds.plot(x, y, label=label, linewidth=1)
    fds.set_ylabel("open file descriptors (colours as RSS)")
    redis_axis, lag = axes[1]
    # None: a sample taken while a fault had Redis or the broker stopped.
    redis_axis.plot(t, [_scaled(s["redis_used_memory"], 2**-20) for s in samples])
    redis_axis.set_ylabel("Redis used_memory (MB)")
    lag.plot(t, [_scaled(s["kafka_lag"], 1) for s in samples])
    lag.set_ylabel("worker's consumer lag (events)")
    latency, freshness = axes[2]
    for p, style in (("p50", "-"), ("p99", "--")):
        latency.plot(t, [s["latency_ms"].get(p) for s in samples], style, label=p)
        freshness.plot(t, [(s["freshness_ms"] or {}).get(p) for s in samples], style, label=p)
    latency.set_ylabel("GET /recommend latency (ms)")
    freshness.set_ylabel("freshness, publish -> personalized (ms)")
    latency.set_yscale("log")
    freshness.set_yscale("log")
    for axis in (latency, freshness):
        axis.legend(fontsize=8)
        axis.set_xlabel("minutes since the load started")
    for axis in axes.flat:
        axis.axvspan(0, result["warmup_s"] / 60, color="grey", alpha=0.12)
        for fault in result["faults"]:
            if fault.get("run") and fault.get("at_s") is not None:
                axis.axvline(fault["at_s"] / 60, color="red", linestyle=":", linewidth=1)
        axis.grid(alpha=0.3)
    figure.suptitle("Soak: warm-up shaded, faults as red dotted lines")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
