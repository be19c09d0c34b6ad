"""`evaluate`: run P1 or P2 on a dataset for a set of models and write JSON + Markdown + PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from batch.evaluation.names import Protocol
from core.settings import Settings
from recsys.commands.train import (
    SinceOption,
    Source,
    SourceOption,
    UntilOption,
    archive_window,
)
from recsys.progress import progress_bars

if TYPE_CHECKING:
    from batch.data import Dataset
    from batch.evaluation.runner import EvaluationResult

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()


def parse_models(values: list[str] | None) -> list[str]:
    """Model names from repeated and/or comma-separated options (default: every model)."""
    if not values:
        from batch.models.registry import model_names

        return model_names()
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return list(dict.fromkeys(names))


@app.command()
def evaluate(
    dataset: Annotated[
        str | None,
        typer.Option(
            help="ml-100k, ml-1m, ml-latest-small, synthetic[:...] or a CSV/Parquet file "
            "(required unless --source archive)."
        ),
    ] = None,
    protocol: Annotated[
        Protocol, typer.Option(help="temporal (P1) or leave-last-out (P2).")
    ] = Protocol.TEMPORAL,
    models: Annotated[
        list[str] | None,
        typer.Option(help="Models to run, comma-separated or repeated (default: all)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Dataset directory (default: RECSYS_DATA_DIR).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="JSON output (default: under the state dir).")
    ] = None,
    report_path: Annotated[
        Path | None,
        typer.Option("--report", help="Markdown report; plots go next to it."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the models and the bootstrap.")] = 0,
    skip_malformed: Annotated[
        bool,
        typer.Option(
            "--skip-malformed", help="Skip and count malformed rows instead of stopping at one."
        ),
    ] = False,
    source: SourceOption = Source.DATASET,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Compare models offline under protocol P1 (temporal) or P2 (leave-last-out).

    Each model is tuned on the validation split, refit on train + validation and scored on test
    with full ranking; writes JSON, a Markdown report and PNG plots.
    """
    # Imported here so that `recsys --help` and the other commands start fast.
    from batch.datasets import load_archive_configured, load_dataset
    from batch.evaluation.report import write_json, write_report
    from batch.evaluation.runner import evaluate_models
    from batch.evaluation.tuning import param_grid
    from batch.models.registry import UnknownModelError, model_factory
    from recsys.commands.data import exit_on_dataset_error

    names = parse_models(models)
    for name in names:
        try:
            model_factory(name)
        except UnknownModelError as exc:
            raise typer.BadParameter(str(exc), param_hint="--models") from None
        except RuntimeError:
            pass  # unavailable models are skipped, with a note, by the runner
    window = archive_window(source, since, until)
    if window is None and dataset is None:
        raise typer.BadParameter("give --dataset, or --source archive", param_hint="--dataset")
    settings = Settings()
    stem = f"evaluation-{'archive' if window is not None else dataset}-{protocol}"
    json_path = json_path or settings.state_dir / "reports" / f"{stem}.json"
    report_path = report_path or json_path.with_suffix(".md")

    def load() -> Dataset:
        if window is not None:
            return load_archive_configured(settings, window)
        assert dataset is not None
        return load_dataset(dataset, data_dir or settings.data_dir, skip_malformed=skip_malformed)

    data = exit_on_dataset_error(load)
    if data.skipped_rows:
        console.print(f"[yellow]{data.skipped_rows:,} malformed rows skipped[/yellow]")
    steps = sum(len(param_grid(name)) + 2 for name in names)  # tuning fits, refit, scoring
    with progress_bars(console) as progress:
        task = progress.add_task("loading", total=steps)
        started: list[str] = []

        def on_step(name: str, step: str) -> None:
            if started:
                progress.advance(task)
            started.append(step)
            progress.update(task, description=f"{name}: {step}")

        result = evaluate_models(data, protocol, names, seed=seed, on_step=on_step)
        progress.update(task, completed=steps, description="done")

    write_json(result, json_path)
    plots = write_report(result, report_path)
    _track(settings, result, [json_path, report_path, *plots])
    for name, reason in result.skipped.items():
        console.print(f"[yellow]skipped {name}:[/yellow] {reason}")
    console.print(f"JSON: {json_path}\nReport: {report_path}")
    for plot in plots:
        console.print(f"Plot: {plot}")


def _track(settings: Settings, result: EvaluationResult, files: list[Path]) -> None:
    """Log the evaluation to MLflow when RECSYS_MLFLOW_TRACKING_URI is set: each model's
    test metrics as `<model>.<metric>` and its chosen hyperparameters, with the reports."""
    from batch.tracking import log_run

    metrics = {
        f"{model.name}.{metric}": value
        for model in result.models
        for metric, value in model.metrics.items()
        if isinstance(value, int | float)
    }
    params: dict[str, object] = {
        "dataset": result.dataset, "protocol": result.protocol.value, "seed": result.seed,
    }  # fmt: skip
    params |= {f"{model.name}.params": model.params for model in result.models}
    run_id = log_run(
        settings, "evaluate", f"{result.dataset} {result.protocol.value}", params, metrics, files
    )
    if run_id is not None:
        console.print(f"MLflow run: {run_id}")


if __name__ == "__main__":
    app()
