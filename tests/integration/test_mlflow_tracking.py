"""MLflow tracking: `recsys train` and `recsys evaluate` record their runs (parameters, metrics,
artifacts) in the store RECSYS_MLFLOW_TRACKING_URI names, here a SQLite store as `recsys up`
uses; the published version is linked to its run; a store that cannot be reached costs the
training nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from batch.tracking import EXPERIMENTS, local_store
from batch.train import train_and_publish
from core.clients import redis_client_for
from core.model_version import ModelMeta, model_meta
from core.settings import Settings
from infra.local.process import free_port
from recsys.cli import app

pytestmark = pytest.mark.integration

DATASET = "synthetic:users=200,items=60,events=4000,seed=3"


def tracked(service_settings: Settings, tmp_path: Path, uri: str | None = None) -> Settings:
    settings = service_settings.model_copy(update={"state_dir": tmp_path / "state"})
    return settings.model_copy(update={"mlflow_tracking_uri": uri or local_store(settings)})


def runs_of(uri: str, kind: str) -> list[object]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENTS[kind])  # type: ignore[index]
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id]))


def meta_of(settings: Settings, version: str) -> ModelMeta | None:
    async def read() -> ModelMeta | None:
        redis = redis_client_for(settings)
        try:
            return await model_meta(redis, version)
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_training_is_logged_and_the_version_links_its_run(
    service_settings: Settings, tmp_path: Path
) -> None:
    settings = tracked(service_settings, tmp_path)
    assert settings.mlflow_tracking_uri is not None
    summary = train_and_publish(settings, DATASET, "als", params={"factors": 8, "iterations": 3})

    (run,) = runs_of(settings.mlflow_tracking_uri, "train")
    assert run.info.run_id == summary["mlflow_run_id"]  # type: ignore[attr-defined]
    data = run.data  # type: ignore[attr-defined]
    assert data.params["dataset"] == summary["dataset"]
    assert data.params["param.factors"] == "8"
    assert data.metrics["interactions"] == summary["interactions"]
    assert data.metrics["fit_seconds"] == pytest.approx(summary["fit_seconds"])
    assert data.tags["model_version"] == summary["version"]
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    logged = {a.path for a in client.list_artifacts(summary["mlflow_run_id"])}
    assert {"train-summary.json", summary["version"]} <= logged
    model_files = {
        a.path for a in client.list_artifacts(summary["mlflow_run_id"], summary["version"])
    }
    assert f"{summary['version']}/model.npz" in model_files
    # Artifacts under the state directory, not wherever the command ran.
    assert (settings.state_dir / "mlflow" / "artifacts").is_dir()

    meta = meta_of(settings, summary["version"])
    assert meta is not None
    assert meta.mlflow_run_id == summary["mlflow_run_id"]


def test_evaluation_is_logged_with_each_models_metrics(
    service_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tracked(service_settings, tmp_path)
    assert settings.mlflow_tracking_uri is not None
    monkeypatch.setenv("RECSYS_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("RECSYS_STATE_DIR", str(settings.state_dir))
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--dataset", DATASET, "--models", "most-popular,itemknn",
         "--protocol", "temporal", "--json", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = runs_of(settings.mlflow_tracking_uri, "evaluate")
    metrics = run.data.metrics  # type: ignore[attr-defined]
    assert 0 < metrics["most-popular.ndcg_at_10"] < 1
    assert "itemknn.ndcg_at_10" in metrics
    assert run.data.params["protocol"] == "temporal"  # type: ignore[attr-defined]
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    assert "eval.json" in {a.path for a in client.list_artifacts(run.info.run_id)}  # type: ignore[attr-defined]


def test_an_unreachable_store_costs_the_training_nothing(
    service_settings: Settings, tmp_path: Path
) -> None:
    settings = tracked(service_settings, tmp_path, f"http://127.0.0.1:{free_port()}")
    summary = train_and_publish(settings, DATASET, "als", params={"factors": 8, "iterations": 3})
    assert summary["mlflow_run_id"] is None
    meta = meta_of(settings, summary["version"])
    assert meta is not None
    assert meta.mlflow_run_id is None
