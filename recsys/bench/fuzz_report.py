"""The verdict, Markdown and plot of `recsys bench fuzz`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from recsys.bench.fuzz import status_classes

CLASS_COLOURS = {"2xx": "tab:green", "3xx": "tab:blue", "4xx": "tab:orange", "5xx": "tab:red",
                 "none": "black"}  # fmt: skip


def _statuses(by_status: Mapping[Any, int]) -> dict[int, int]:
    # Saved JSON turns the status codes into strings.
    return {int(status): n for status, n in by_status.items()}


def verdict(result: Mapping[str, Any]) -> dict[str, Any]:
    """Passed: schemathesis exited 0 with no failure and no error, every operation tested, and
    no request got a 5xx or no answer at all."""
    summary = result["summary"]
    operations = summary.get("operations") or {}
    totals = dict.fromkeys(("2xx", "3xx", "4xx", "5xx", "none"), 0)
    for by_status in result["requests"].values():
        for key, n in status_classes(_statuses(by_status)).items():
            totals[key] += n
    failures = sum(group["count"] for group in summary.get("failures") or [])
    errors = sum(group["count"] for group in summary.get("errors") or [])
    untested = (operations.get("selected") or 0) - (operations.get("tested") or 0)
    passed = (
        result["exit_code"] == 0
        and failures == 0
        and errors == 0
        and untested == 0
        and totals["5xx"] == 0
        and totals["none"] == 0
    )
    return {
        "passed": passed,
        "failures": failures,
        "errors": errors,
        "untested_operations": untested,
        "requests": sum(totals.values()),
        "by_class": totals,
    }


def figures_table(result: Mapping[str, Any]) -> str:
    found = verdict(result)
    cases = result["summary"].get("test_cases") or {}
    operations = result["summary"].get("operations") or {}
    by_class = found["by_class"]
    rows = [
        ("verdict", "**pass**" if found["passed"] else "**FAIL**"),
        ("operations tested", f"{operations.get('tested', 0)} of {operations.get('selected', 0)}"),
        ("test cases generated", f"{cases.get('generated', 0):,}"),
        ("requests sent", f"{found['requests']:,}"),
        ("answers 2xx / 4xx / 5xx / none",
         f"{by_class['2xx']:,} / {by_class['4xx']:,} / {by_class['5xx']:,} / {by_class['none']:,}"),
        ("failures (unique) / errors", f"{found['failures']} / {found['errors']}"),
        ("examples per operation (budget)", f"{result['config']['max_examples']:,}"),
        ("run time", f"{result['seconds'] / 60:.1f} min"),
    ]  # fmt: skip
    return "\n".join(
        ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    )


def _operations_table(result: Mapping[str, Any]) -> list[str]:
    lines = ["| operation | requests | statuses (count) |", "|---|---|---|"]
    for operation, by_status in result["requests"].items():
        statuses = _statuses(by_status)
        listed = ", ".join(f"{status or 'none'} ({n:,})" for status, n in sorted(statuses.items()))
        lines.append(f"| `{operation}` | {sum(statuses.values()):,} | {listed} |")
    return lines


def markdown(result: Mapping[str, Any], plot_name: str) -> str:
    summary = result["summary"]
    phases = summary.get("phases") or {}
    lines = [
        "# `recsys bench fuzz`: the OpenAPI contract under schemathesis",
        "",
        "{header}",
        f"schemathesis {result.get('schemathesis_version')}, every check, phases "
        f"{result['config']['phases']}, against `recsys serve` ({result['config']['workers']} "
        f"workers, the API key set) over throwaway Kafka and Redis, a model of "
        f"`{result['dataset']}` published with its ranker, and the example experiment registered.",
        "",
        figures_table(result),
        "",
        "## Phases",
        "",
        "| phase | status |",
        "|---|---|",
        *(f"| {name} | {found['status']} |" for name, found in phases.items()),
        "",
        "## Requests per operation",
        "",
        f"![requests per operation]({plot_name})",
        "",
        *_operations_table(result),
    ]
    if summary.get("failures"):
        lines += ["", "## Failures", "", "| check | count | operations |", "|---|---|---|"]
        lines += [
            f"| {group['title']} | {group['count']} | {', '.join(group['operations'])} |"
            for group in summary["failures"]
        ]
    # Every warning kind is listed, the ones that did not occur with no operation.
    warned = {kind: labels for kind, labels in (summary.get("warnings") or {}).items() if labels}
    lines += ["", "## schemathesis's warnings", ""]
    lines += [f"- {kind}: {', '.join(labels)}" for kind, labels in warned.items()] or ["None."]
    if not verdict(result)["passed"]:
        tail = result["output_tail"]
        lines += ["", "## The end of schemathesis's output", "", "```", *tail, "```"]
    return "\n".join(lines) + "\n"


def plot(result: Mapping[str, Any], path: Path) -> None:
    operations = list(result["requests"])
    classes = [status_classes(_statuses(result["requests"][op])) for op in operations]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(operations) + 1.5))
    left = [0] * len(operations)
    for name, colour in CLASS_COLOURS.items():
        counts = [found[name] for found in classes]
        if any(counts):
            ax.barh(operations, counts, left=left, color=colour, label=name)
            left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("requests schemathesis sent")
    total = verdict(result)["requests"]
    ax.set_title(f"Requests per operation and status class ({total:,} in all)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
