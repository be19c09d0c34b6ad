"""Markdown and the latency plot for `recsys bench api`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

TARGETS = {"p50": 3.0, "p99": 15.0, "saturation_rps": 1000.0}


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    latency = result["recommend"]["fixed_rate"]["latency_ms"]
    return {
        "p50": latency["p50"] < TARGETS["p50"],
        "p99": latency["p99"] < TARGETS["p99"],
        "saturation_rps": result["recommend"]["saturation"]["requests_per_s"]
        >= TARGETS["saturation_rps"],
    }


def plot(result: dict[str, Any], samples: dict[str, list[float]], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rate = result["config"]["rate"]
    for name, label in (("recommend", "GET /recommend"), ("live", "GET /health/live")):
        values = np.asarray(samples[name])
        if values.size == 0:
            continue
        top = float(np.percentile(values, 99.5))
        left.hist(values[values <= top], bins=80, alpha=0.6, label=label)
        ordered = np.sort(values)
        # Latency against "fraction of requests slower than this", on a log axis: the tail
        # is what the targets are about.
        slower = 1.0 - np.arange(len(ordered)) / len(ordered)
        right.plot(ordered, slower, label=label)
    for key, style in (("p50", ":"), ("p99", "--")):
        left.axvline(TARGETS[key], color="red", linestyle=style, label=f"target {key}")
    left.set_title(f"Latency at {rate} requests/s, open loop (to the 99.5th pct)")
    left.set_xlabel("ms from the scheduled send time")
    left.set_ylabel("requests")
    left.legend()
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("ms")
    right.set_ylabel("fraction of requests slower")
    right.set_title("Latency tail")
    right.axhline(0.01, color="grey", linestyle="--", linewidth=0.8)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ms(figures: dict[str, float], keys: tuple[str, ...] = ("p50", "p95", "p99", "max")) -> str:
    return " / ".join(f"{figures[k]:.2f}" for k in keys) + " ms"


def _sources(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "none read"
    return ", ".join(f"{name} {n:,} ({n / total:.1%})" for name, n in sorted(counts.items()))


def _cpu_line(run: dict[str, Any], requests: int, generator_cpu_s: float) -> str:
    res = run["resources"]
    wall = res["wall_s"]
    return (
        f"{res['server_cpu_s'] / wall:.2f} / {res['redis_cpu_s'] / wall:.2f} / "
        f"{generator_cpu_s / wall:.2f} cores "
        f"({res['server_cpu_s'] / requests * 1e6:,.0f} / {generator_cpu_s / requests * 1e6:,.0f} "
        "µs of server / generator CPU per request)"
    )


def figures_table(result: dict[str, Any]) -> str:
    """The headline table (also used by BENCHMARKS.md)."""
    config = result["config"]
    rec, live = result["recommend"], result["live"]
    ok = verdicts(result)
    rf, rs = rec["fixed_rate"], rec["saturation"]
    lf, ls = live["fixed_rate"], live["saturation"]
    rows = [
        (
            f"GET /recommend p50 at {config['rate']} requests/s (open loop, "
            f"{rf['requests']:,} requests)",
            f"**{rf['latency_ms']['p50']:.2f} ms**",
            f"< 3 ms: {_met(ok['p50'])}",
        ),
        (
            "GET /recommend p95 / p99 / p99.9 / max at the same rate",
            f"{rf['latency_ms']['p95']:.2f} / **{rf['latency_ms']['p99']:.2f}** / "
            f"{rf['latency_ms']['p99.9']:.2f} / {rf['latency_ms']['max']:.2f} ms",
            f"p99 < 15 ms: {_met(ok['p99'])}",
        ),
        (
            f"GET /recommend at saturation ({config['workers']} workers, wrk "
            f"{rs['connections']} connections, {rs['seconds']:.0f} s)",
            f"**{rs['requests_per_s']:,.0f} requests/s**{_split(rs)}",
            f">= 1,000: {_met(ok['saturation_rps'])}",
        ),
        ("its wrk latency p50 / p95 / p99 / max (closed loop)", _ms(rs["latency_ms"]), ""),
        (
            "GET /recommend answers at the fixed rate: status / source",
            f"{rf['statuses']}; {_sources(rf['sources'])}",
            "all personalized",
        ),
        (
            "GET /recommend answers at saturation: source (reasons of the others)",
            f"{_sources(rs.get('sources', {}))} ({rs.get('reasons') or 'none'})",
            "all personalized",
        ),
        (
            "GET /recommend errors: fixed rate / saturation",
            f"{rf['errors'] or 'none'} / {rs['errors']}",
            "none",
        ),
        (
            f"floor: GET /health/live p50 / p95 / p99 / max at {config['rate']} requests/s",
            _ms(lf["latency_ms"]),
            "",
        ),
        ("floor: GET /health/live at saturation", f"{ls['requests_per_s']:,.0f} requests/s", ""),
    ]
    if impressions := result.get("impressions"):  # absent from runs before impressions
        rows += _impression_rows(impressions, config)
    if wake := result.get("idle_wake_cost"):
        rows.append(
            (
                "the machine: fixed interpreter work back to back / right after 5 ms idle, "
                "before and after the runs",
                " and ".join(
                    f"{wake[when]['back_to_back_us']:.0f} / {wake[when]['after_idle_us']:.0f} µs"
                    for when in ("before", "after")
                ),
                "",
            )
        )
    lines = ["| figure | value | target |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def _split(saturation: dict[str, Any]) -> str:
    """The connections each worker held halfway through the run (recorded since 2026-11-23)."""
    split = saturation.get("connections_per_worker")
    if not split:
        return ""
    return f" (connections per worker: {' / '.join(str(n) for n in split)})"


def _history_line(result: dict[str, Any]) -> str:
    """Runs before histories were seeded asked for users with no online state."""
    mean = result.get("history_items_per_user")
    if mean is None:
        return ""
    return (
        f" Each user has the online state of their newest ml-100k ratings ({mean:.1f} items on"
        " average), whose items every personalized request excludes, as in production."
    )


def markdown(result: dict[str, Any], plot_name: str) -> str:
    config = result["config"]
    rf, rs = result["recommend"]["fixed_rate"], result["recommend"]["saturation"]
    lf, ls = result["live"]["fixed_rate"], result["live"]["saturation"]
    table = figures_table(result)
    redis = result.get("redis", "one Redis server")
    gen_rows = [
        (
            "fixed rate, /recommend",
            f"{rf['client_cpu_us_per_request']:,.0f} µs CPU per request",
            _ms(rf["client_lag_ms"], ("p50", "p99", "max")),
            _ms(rf["service_time_ms"], ("p50", "p99")),
            _cpu_line(rf, rf["requests"], rf["client_cpu_s"]),
        ),
        (
            "fixed rate, /health/live",
            f"{lf['client_cpu_us_per_request']:,.0f} µs CPU per request",
            _ms(lf["client_lag_ms"], ("p50", "p99", "max")),
            _ms(lf["service_time_ms"], ("p50", "p99")),
            _cpu_line(lf, lf["requests"], lf["client_cpu_s"]),
        ),
        (
            "wrk, /recommend",
            f"{rs['wrk_cpu_us_per_request']:,.1f} µs CPU per request",
            "",
            "",
            _cpu_line(rs, rs["requests"], rs["wrk_cpu_s"]),
        ),
        (
            "wrk, /health/live",
            f"{ls['wrk_cpu_us_per_request']:,.1f} µs CPU per request",
            "",
            "",
            _cpu_line(ls, ls["requests"], ls["wrk_cpu_s"]),
        ),
    ]
    gen_table = "\n".join(f"| {' | '.join(row)} |" for row in gen_rows)
    return f"""# API benchmark

{{header}}`recsys serve --workers {config["workers"]}` on 127.0.0.1 with the embedded Qdrant
engine, {redis} (and Kafka, idle here) on the same machine, and an ALS model
trained on ml-100k and published (`{result["model"]["version"]}`). Requests ask for k={config["k"]},
diversity={config["diversity"]} (MMR over {result["mmr_candidates"]} candidates) for the
{result["users"]} ml-100k users in shuffled rounds.{_history_line(result)}

- **Fixed rate**: an open-loop HTTP/1.1 client (`recsys/bench/open_loop.py`: keep-alive, up to
  {config["max_connections"]} connections, a pacing thread that writes each request, a reader
  thread per connection) sends each request at its scheduled time whether or not earlier ones
  have answered; latency counts from the scheduled time, so queueing is not hidden (the
  client's own lateness is included, and shown below).
- **Saturation**: wrk 4.1 ({config["wrk_threads"]} thread, {config["connections"]} keep-alive
  connections, closed loop) for {config["saturation_seconds"]:.0f} s per route.

{table}

**Load generators and what the machine spent** (server / Redis / generator CPU, in cores
busy over the run):

| run | generator cost | generator lateness p50 / p99 / max | service time p50 / p99 \
| CPU: server / Redis / generator |
|---|---|---|---|---|
{gen_table}

![latency distribution]({plot_name})
"""


def _impression_rows(
    impressions: dict[str, Any], config: dict[str, Any]
) -> list[tuple[str, str, str]]:
    p50, delta = impressions["p50_ms"], impressions["p50_delta_ms"]
    rounds = len({r["round"] for r in impressions["rounds"]})
    recorded = impressions["recorded"]
    dropped = sum(v for k, v in recorded.items() if k.startswith("dropped"))
    return [
        (
            f"GET /recommend p50 at {config['rate']} requests/s, impressions recorded / none "
            f"(median of {rounds} alternating rounds of {config['impression_seconds']:g} s on two "
            "fresh servers)",
            f"{p50['on']:.2f} / {p50['off']:.2f} ms: **{delta:+.2f} ms**",
            f"<= +0.2 ms: {_met(delta <= 0.2)}",
        ),
        (
            "impressions sent to Kafka / dropped during those rounds",
            f"{recorded.get('sent', 0):,.0f} / {dropped:,.0f} "
            f"(of {impressions['requests_with_impressions']:,} answers)",
            "all sent",
        ),
    ]
