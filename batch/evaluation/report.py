"""Write an `EvaluationResult` as JSON, a Markdown report and PNG plots next to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, safe in CI and in worker threads
import matplotlib.pyplot as plt

from batch.evaluation.runner import EvaluationResult, ModelResult
from batch.evaluation.tuning import SELECTION_K

PROTOCOL_TITLES = {
    "temporal": "P1, global temporal split (fit train + validation, score the last 10%)",
    "leave-last-out": "P2, leave-last-one-out (fit all but the last row, score the last row)",
}


def result_json(result: EvaluationResult) -> dict[str, Any]:
    """The machine-readable form: run facts plus, per model, metrics, params and curves."""
    models = {}
    for model in result.models:
        models[model.name] = {
            **model.metrics,
            "fit_seconds": model.fit_seconds,
            "params": model.params,
            "protocol": str(result.protocol),
            "dataset": result.dataset,
            "n_evaluated_users": result.n_evaluated_users,
            "tuning": [
                {
                    "params": trial.params,
                    f"validation_ndcg@{SELECTION_K}": trial.validation_ndcg,
                    "fit_seconds": trial.fit_seconds,
                }
                for trial in model.tuning
            ],
            "curves": {"k": list(range(1, len(model.curves["ndcg"]) + 1)), **model.curves},
        }
    return {
        "dataset": result.dataset,
        "protocol": str(result.protocol),
        "n_evaluated_users": result.n_evaluated_users,
        "n_tuning_users": result.n_tuning_users,
        "n_items": result.n_items,
        "n_fit_rows": result.n_fit_rows,
        "seed": result.seed,
        "selection": f"ndcg@{SELECTION_K} on the validation split",
        "models": models,
        "skipped": result.skipped,
    }


def write_json(result: EvaluationResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    from core.provenance import provenance

    path.write_text(json.dumps({**result_json(result), **provenance()}, indent=2) + "\n")


def write_report(result: EvaluationResult, path: Path) -> list[Path]:
    """Write the Markdown report at `path` and its plots beside it; returns the plot paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    curves_png = path.with_name(f"{path.stem}-ndcg-recall-at-k.png")
    scatter_png = path.with_name(f"{path.stem}-ndcg-vs-coverage.png")
    if result.models:
        plot_curves(result.models, curves_png)
        plot_accuracy_vs_coverage(result.models, scatter_png)
    path.write_text(markdown(result, curves_png.name, scatter_png.name))
    return [curves_png, scatter_png] if result.models else []


def markdown(result: EvaluationResult, curves_png: str, scatter_png: str) -> str:
    k = SELECTION_K
    lines = [
        f"# Offline evaluation: {result.dataset}",
        "",
        f"Protocol: {PROTOCOL_TITLES.get(str(result.protocol), str(result.protocol))}.",
        f"Evaluated users: {result.n_evaluated_users} (tuning: {result.n_tuning_users}); "
        f"catalog: {result.n_items} items, all ranked; fit rows: {result.n_fit_rows}; "
        f"seed {result.seed}.",
        f"Hyperparameters chosen by NDCG@{k} on the validation split, then refitted on "
        "train + validation and scored once on test.",
        "",
        f"| model | NDCG@{k} | 95% CI (bootstrap) | SE | Recall@{k} | Precision@{k} | HR@{k} "
        f"| MRR | Coverage@{k} | Diversity@{k} | Novelty@{k} | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in result.models:
        m = model.metrics
        low, high = m[f"ndcg@{k}_ci95"]
        lines.append(
            f"| {model.name} | {m[f'ndcg@{k}']:.4f} | [{low:.4f}, {high:.4f}] "
            f"| {m[f'ndcg@{k}_se']:.4f} | {m[f'recall@{k}']:.4f} | {m[f'precision@{k}']:.4f} "
            f"| {m[f'hr@{k}']:.4f} | {m['mrr']:.4f} | {m[f'coverage@{k}']:.4f} "
            f"| {_optional(m[f'diversity@{k}'])} | {m[f'novelty@{k}']:.3f} "
            f"| {model.fit_seconds:.2f} |"
        )
    lines += [
        "",
        f"Diversity@{k}: mean pairwise 1 - Jaccard of item genre sets in the top {k}. "
        f"Novelty@{k}: mean -log2 of the share of fit users who interacted with a top-{k} item "
        "(add-one smoothed).",
        "",
        "## Chosen hyperparameters",
        "",
        f"| model | params | trials | best validation NDCG@{k} |",
        "|---|---|---|---|",
    ]
    for model in result.models:
        best = max((trial.validation_ndcg for trial in model.tuning), default=float("nan"))
        lines.append(
            f"| {model.name} | `{json.dumps(model.params)}` | {len(model.tuning)} | {best:.4f} |"
        )
    if result.skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {name}: {reason}" for name, reason in result.skipped.items()]
    if result.models:
        lines += [
            "",
            "## Plots",
            "",
            f"![NDCG@K and Recall@K]({curves_png})",
            "",
            f"![NDCG@{k} against Coverage@{k}]({scatter_png})",
        ]
    return "\n".join(lines) + "\n"


def plot_curves(models: list[ModelResult], path: Path) -> None:
    """NDCG@K and Recall@K for K = 1..50, one line per model."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric, title in zip(axes, ("ndcg", "recall"), ("NDCG@K", "Recall@K"), strict=True):
        for model in models:
            values = model.curves[metric]
            axis.plot(range(1, len(values) + 1), values, label=model.name)
        axis.set_xlabel("K")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_accuracy_vs_coverage(models: list[ModelResult], path: Path) -> None:
    """NDCG@10 against Coverage@10, one point per model."""
    k = SELECTION_K
    figure, axis = plt.subplots(figsize=(5.5, 4.2))
    for model in models:
        x, y = model.metrics[f"coverage@{k}"], model.metrics[f"ndcg@{k}"]
        axis.scatter([x], [y])
        axis.annotate(model.name, (x, y), textcoords="offset points", xytext=(4, 4))
    axis.set_xlabel(f"Coverage@{k}")
    axis.set_ylabel(f"NDCG@{k}")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _optional(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
