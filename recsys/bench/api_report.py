"""Markdown and the latency plot for `recsys bench api`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

TARGETS = {"p50": 3.0, "p99": 15.0, "saturation_rps": 1000.0}
# The two-stage path with the learned ranker on (`recsys bench api --ranker`): its latency
# targets hold at this rate, and its saturation target counts only ranked answers.
RANKER_TARGETS = {"rate": 200, "p50": 3.0, "p99": 10.0, "saturation_rps": 1000.0}


def _met(ok: bool | None) -> str:
    if ok is None:
        return f"not judged (the target is at {RANKER_TARGETS['rate']} requests/s)"
    return "met" if ok else "**not met**"


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    latency = result["recommend"]["fixed_rate"]["latency_ms"]
    return {
        "p50": latency["p50"] < TARGETS["p50"],
        "p99": latency["p99"] < TARGETS["p99"],
        "saturation_rps": result["recommend"]["saturation"]["requests_per_s"]
        >= TARGETS["saturation_rps"],
    }


def ranked_share(run: dict[str, Any]) -> float:
    """The share of one run's answers whose source is "ranked": of every request sent at the
    fixed rate, of every answer wrk counted at saturation. A fallback answer (the sources' order,
    popular, ...) or an error is not ranked."""
    total = run["requests"]
    return run.get("sources", {}).get("ranked", 0) / total if total else float("nan")


def ranker_verdicts(result: dict[str, Any]) -> dict[str, bool | None]:
    """The targets of the two-stage path with the ranker on: p50 and p99 at the fixed rate
    (None when it was not run at the targets' rate), every answer ranked at that rate, and the
    saturation rate with every answer ranked."""
    fixed, saturated = result["recommend"]["fixed_rate"], result["recommend"]["saturation"]
    latency = fixed["latency_ms"]
    at_rate = result["config"]["rate"] == RANKER_TARGETS["rate"]
    return {
        "p50": latency["p50"] < RANKER_TARGETS["p50"] if at_rate else None,
        "p99": latency["p99"] < RANKER_TARGETS["p99"] if at_rate else None,
        "fixed_rate_all_ranked": ranked_share(fixed) == 1.0,
        "saturation_rps": saturated["requests_per_s"] >= RANKER_TARGETS["saturation_rps"]
        and ranked_share(saturated) == 1.0,
    }


def plot(result: dict[str, Any], samples: dict[str, list[float]], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rate = result["config"]["rate"]
    ranker = bool(result["config"].get("ranker"))
    targets = RANKER_TARGETS if ranker else TARGETS
    curves = (
        ("recommend", "GET /recommend, ranker on" if ranker else "GET /recommend"),
        ("ranker_off", "GET /recommend, ranker off"),
        ("live", "GET /health/live"),
    )
    for name, label in curves:
        values = np.asarray(samples.get(name, []))
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
        left.axvline(targets[key], color="red", linestyle=style, label=f"target {key}")
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
    # With the ranker on, the two-stage path's targets; otherwise those of the MMR path.
    ranker = bool(config.get("ranker"))
    ok: dict[str, bool | None] = {**(ranker_verdicts(result) if ranker else verdicts(result))}
    targets, expected = (RANKER_TARGETS, "ranked") if ranker else (TARGETS, "personalized")
    rf, rs = rec["fixed_rate"], rec["saturation"]
    lf, ls = live["fixed_rate"], live["saturation"]
    rows = [
        (
            f"GET /recommend p50 at {config['rate']} requests/s (open loop, "
            f"{rf['requests']:,} requests)",
            f"**{rf['latency_ms']['p50']:.2f} ms**",
            f"< {targets['p50']:g} ms: {_met(ok['p50'])}",
        ),
        (
            "GET /recommend p95 / p99 / p99.9 / max at the same rate",
            f"{rf['latency_ms']['p95']:.2f} / **{rf['latency_ms']['p99']:.2f}** / "
            f"{rf['latency_ms']['p99.9']:.2f} / {rf['latency_ms']['max']:.2f} ms",
            f"p99 < {targets['p99']:g} ms: {_met(ok['p99'])}",
        ),
        (
            f"GET /recommend at saturation ({config['workers']} workers, wrk "
            f"{rs['connections']} connections, {rs['seconds']:.0f} s)",
            f"**{rs['requests_per_s']:,.0f} requests/s**{_split(rs)}",
            f">= 1,000{', every answer ranked' if ranker else ''}: {_met(ok['saturation_rps'])}",
        ),
        ("its wrk latency p50 / p95 / p99 / max (closed loop)", _ms(rs["latency_ms"]), ""),
        (
            "GET /recommend answers at the fixed rate: status / source",
            f"{rf['statuses']}; {_sources(rf['sources'])}",
            f"all {expected}",
        ),
        (
            "GET /recommend answers at saturation: source (reasons of the others)",
            f"{_sources(rs.get('sources', {}))} ({rs.get('reasons') or 'none'})",
            f"all {expected}",
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
    elif ranker:
        rows.append(("impressions recorded / none", "not compared in a --ranker run", ""))
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


def _ranker_line(result: dict[str, Any]) -> str:
    if not result["config"].get("ranker"):
        return ""
    return (
        " with its learned ranker (`recsys train --ranker`): /recommend gathers candidates from"
        ' several sources and scores them with the LightGBM ranker (`"source": "ranked"`)'
    )


def _history_line(result: dict[str, Any]) -> str:
    """Runs before histories were seeded asked for users with no online state."""
    mean = result.get("history_items_per_user")
    if mean is None:
        return ""
    return (
        f" Each user has the online state of their newest ml-100k ratings ({mean:.1f} items on"
        " average), whose items every personalized request excludes, as in production."
    )


def _ranked(run: dict[str, Any]) -> str:
    ranked, total = run.get("sources", {}).get("ranked", 0), run["requests"]
    return f"{ranked:,} of {total:,} ({ranked_share(run):.2%})"


def ranker_table(result: dict[str, Any]) -> str:
    """GET /recommend with the ranker on and off (RECSYS_API_RANKER=off, a fresh server, the
    same requests), side by side, with the two-stage path's verdicts for the ranker on."""
    config = result["config"]
    on, off = result["recommend"], result["ranker_off"]
    ok = ranker_verdicts(result)
    pair = ((on["fixed_rate"], on["saturation"]), (off["fixed_rate"], off["saturation"]))

    def cells(figure: Callable[[dict[str, Any], dict[str, Any]], str]) -> tuple[str, str]:
        on_cell, off_cell = (figure(fixed, saturated) for fixed, saturated in pair)
        return on_cell, off_cell

    def server_cpu(run: dict[str, Any]) -> str:
        return f"{run['resources']['server_cpu_s'] / run['requests'] * 1e6:,.0f} µs"

    rows = [
        (
            f"p50 / p95 / p99 at {config['rate']} requests/s (open loop, "
            f"{on['fixed_rate']['requests']:,} requests)",
            *cells(lambda f, s: _ms(f["latency_ms"], ("p50", "p95", "p99"))),
            f"p50 < {RANKER_TARGETS['p50']:g} ms: {_met(ok['p50'])}; "
            f"p99 < {RANKER_TARGETS['p99']:g} ms: {_met(ok['p99'])}",
        ),
        (
            "achieved rate",
            *cells(lambda f, s: f"{f['achieved_rate']:,.1f} requests/s"),
            "",
        ),
        (
            "answers ranked at the fixed rate",
            *cells(lambda f, s: _ranked(f)),
            f"all ranked: {_met(ok['fixed_rate_all_ranked'])}",
        ),
        ("sources at the fixed rate", *cells(lambda f, s: _sources(f["sources"])), ""),
        (
            f"at saturation ({config['workers']} workers, wrk {on['saturation']['connections']} "
            f"connections, {on['saturation']['seconds']:.0f} s)",
            *cells(lambda f, s: f"**{s['requests_per_s']:,.0f} requests/s**"),
            f">= {RANKER_TARGETS['saturation_rps']:,.0f} requests/s, every answer ranked: "
            f"{_met(ok['saturation_rps'])}",
        ),
        (
            "answers ranked at saturation (reasons of the others)",
            *cells(lambda f, s: f"{_ranked(s)} ({s.get('reasons') or 'none'})"),
            "",
        ),
        (
            "wrk latency p50 / p95 / p99 at saturation (closed loop)",
            *cells(lambda f, s: _ms(s["latency_ms"], ("p50", "p95", "p99"))),
            "",
        ),
        (
            "server CPU per request: fixed rate / saturation",
            *cells(lambda f, s: f"{server_cpu(f)} / {server_cpu(s)}"),
            "",
        ),
        (
            "errors: fixed rate / saturation",
            *cells(lambda f, s: f"{f['errors'] or 'none'} / {s['errors']}"),
            "none",
        ),
    ]
    lines = [
        "| GET /recommend | ranker on | ranker off | target (ranker on) |",
        "|---|---|---|---|",
    ]
    return "\n".join(lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])


def _ranker_section(result: dict[str, Any]) -> str:
    if "ranker_off" not in result:
        return ""
    return f"""
**Ranker on against off.** After the runs above, the same GET /recommend requests (warm-up,
fixed rate, wrk) on a fresh server started with RECSYS_API_RANKER=off, which keeps the
candidate sources' own order (`"source": "personalized"`, reason `ranker_off`). The two servers
ran one after the other, not side by side. The impressions comparison was skipped.

{ranker_table(result)}
"""


def breakdown_table(result: dict[str, Any]) -> str:
    """The server's own mean time per /recommend at the fixed rate, by stage and by backend
    call (`recsys.bench.time_breakdown`), for each server that ran; empty for runs before it
    was recorded."""
    runs = [("", result["recommend"]["fixed_rate"])]
    if off := result.get("ranker_off"):
        runs = [(" (ranker on)", runs[0][1]), (" (ranker off)", off["fixed_rate"])]
    found = [(label, run["time_breakdown"]) for label, run in runs if run.get("time_breakdown")]
    if not found:
        return ""
    names = sorted({name for _label, figures in found for name in figures["mean_ms"]})
    header = "| where | " + " | ".join(f"mean ms{label}" for label, _ in found) + " |"
    lines = [header, "|---" * (len(found) + 1) + "|"]
    for name in names:
        cells = " | ".join(
            f"{figures['mean_ms'][name]:.3f}" if name in figures["mean_ms"] else "none"
            for _, figures in found
        )
        lines.append(f"| {name} | {cells} |")
    return f"""
**Where a request's time goes**, from the server's own histograms over the fixed-rate run
(`/metrics` before and after; the mean over every /recommend request, so a stage or call that
only some requests make counts as its share). The stages nest inside the request; backend
calls nest inside the stages that make them.

{chr(10).join(lines)}
"""


def markdown(result: dict[str, Any], plot_name: str) -> str:
    config = result["config"]
    rf, rs = result["recommend"]["fixed_rate"], result["recommend"]["saturation"]
    lf, ls = result["live"]["fixed_rate"], result["live"]["saturation"]
    table = figures_table(result)
    redis = result.get("redis", "one Redis server")
    gen_rows = [
        _fixed_row("fixed rate, /recommend", rf),
        _fixed_row("fixed rate, /health/live", lf),
        _wrk_row("wrk, /recommend", rs),
        _wrk_row("wrk, /health/live", ls),
    ]
    if off := result.get("ranker_off"):
        gen_rows += [
            _fixed_row("fixed rate, /recommend, ranker off", off["fixed_rate"]),
            _wrk_row("wrk, /recommend, ranker off", off["saturation"]),
        ]
    gen_table = "\n".join(f"| {' | '.join(row)} |" for row in gen_rows)
    return f"""# API benchmark

{{header}}`recsys serve --workers {config["workers"]}` on 127.0.0.1 with the embedded Qdrant
engine, {redis} (and Kafka, idle here) on the same machine, and an ALS model
trained on ml-100k and published (`{result["model"]["version"]}`){_ranker_line(result)}.
Requests ask for k={config["k"]}, diversity={config["diversity"]} (MMR over
{result["mmr_candidates"]} candidates) for the {result["users"]} ml-100k users in shuffled
rounds.{_history_line(result)}

- **Fixed rate**: an open-loop HTTP/1.1 client (`recsys/bench/open_loop.py`: keep-alive, up to
  {config["max_connections"]} connections, a pacing thread that writes each request, a reader
  thread per connection) sends each request at its scheduled time whether or not earlier ones
  have answered; latency counts from the scheduled time, so queueing is not hidden (the
  client's own lateness is included, and shown below).
- **Saturation**: wrk 4.1 ({config["wrk_threads"]} thread, {config["connections"]} keep-alive
  connections, closed loop) for {config["saturation_seconds"]:.0f} s per route.

{table}
{_ranker_section(result)}{breakdown_table(result)}
**Load generators and what the machine spent** (server / Redis / generator CPU, in cores
busy over the run):

| run | generator cost | generator lateness p50 / p99 / max | service time p50 / p99 \
| CPU: server / Redis / generator |
|---|---|---|---|---|
{gen_table}

![latency distribution]({plot_name})
"""


def _fixed_row(label: str, run: dict[str, Any]) -> tuple[str, ...]:
    return (
        label,
        f"{run['client_cpu_us_per_request']:,.0f} µs CPU per request",
        _ms(run["client_lag_ms"], ("p50", "p99", "max")),
        _ms(run["service_time_ms"], ("p50", "p99")),
        _cpu_line(run, run["requests"], run["client_cpu_s"]),
    )


def _wrk_row(label: str, run: dict[str, Any]) -> tuple[str, ...]:
    return (
        label,
        f"{run['wrk_cpu_us_per_request']:,.1f} µs CPU per request",
        "",
        "",
        _cpu_line(run, run["requests"], run["wrk_cpu_s"]),
    )


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
