"""Runs logged to MLflow: what `recsys train`, `recsys evaluate` and `recsys retrain` did, with
their parameters, metrics and artifacts, when RECSYS_MLFLOW_TRACKING_URI is set.

One experiment per kind of run (`EXPERIMENTS`). A local store (a `sqlite:` or `file:` URI, as
`recsys up` sets under its state directory) keeps the artifacts under
`<state dir>/mlflow/artifacts`; a tracking server (`http(s):`, the compose file's `mlflow`
service) keeps them where it is configured to.

Tracking is a record, not a step the work depends on: a store that cannot be reached is logged
as a warning and the run carries on unrecorded (`log_run` returns None).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from core.settings import Settings, mask_url_password

log = logging.getLogger(__name__)

Kind = Literal["train", "evaluate", "retrain"]
EXPERIMENTS: dict[Kind, str] = {
    "train": "recsys-train",
    "evaluate": "recsys-evaluate",
    "retrain": "recsys-retrain",
}
# MLflow's limit on a parameter's value.
MAX_PARAM_CHARS = 6000


def mlflow_key(name: str) -> str:
    """`name` as MLflow accepts a key (letters, digits, _ - . space /): `ndcg@10` is
    `ndcg_at_10`."""
    return re.sub(r"[^\w\-. /]", "_", name.replace("@", "_at_"))


def local_store(settings: Settings) -> str:
    """The embedded default: a SQLite store under the state directory (`recsys up`)."""
    return f"sqlite:///{(settings.state_dir / 'mlflow' / 'mlflow.db').resolve()}"


def log_run(
    settings: Settings,
    kind: Kind,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float | int | None],
    artifacts: Sequence[Path] = (),
    tags: Mapping[str, str] | None = None,
) -> str | None:
    """Record one finished run in the configured store; its run id, or None when tracking is
    off or the store failed. `artifacts`: files or folders, copied as they are."""
    uri = settings.mlflow_tracking_uri
    if not uri:
        return None
    try:
        return _log(settings, uri, kind, run_name, params, metrics, artifacts, tags or {})
    except Exception as exc:  # any failure of the store: the run is not recorded, nothing else
        log.warning(
            "MLflow at %s did not record the %s run (%r): carrying on without it",
            mask_url_password(uri), kind, exc,
        )  # fmt: skip
        return None


def _log(
    settings: Settings,
    uri: str,
    kind: Kind,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float | int | None],
    artifacts: Sequence[Path],
    tags: Mapping[str, str],
) -> str:
    import os

    # MLflow's HTTP client retries a server that is down for minutes by default: a few quick
    # tries instead, as a run's record is not worth holding up the run (an operator's own
    # setting wins).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    name = EXPERIMENTS[kind]
    experiment = client.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(name, artifact_location=_artifact_root(settings, uri, name))
    )
    run = client.create_run(experiment_id, run_name=run_name)
    run_id = str(run.info.run_id)
    now_ms = int(time.time() * 1000)
    try:
        client.log_batch(
            run_id,
            metrics=[
                Metric(mlflow_key(key), float(value), now_ms, 0)
                for key, value in metrics.items()
                if value is not None
            ],
            params=[
                Param(mlflow_key(key), str(value)[:MAX_PARAM_CHARS])
                for key, value in params.items()
            ],
            tags=[RunTag(mlflow_key(key), value) for key, value in tags.items()],
        )
        for path in artifacts:
            if path.is_dir():
                client.log_artifacts(run_id, str(path), path.name)
            elif path.exists():
                client.log_artifact(run_id, str(path))
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def _artifact_root(settings: Settings, uri: str, experiment: str) -> str | None:
    """Where a local store's artifacts go (MLflow's default would be ./mlruns, wherever the
    command ran); a server decides for itself (None)."""
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return (settings.state_dir / "mlflow" / "artifacts" / experiment).resolve().as_uri()
    return None
