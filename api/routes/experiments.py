"""GET /experiments and GET /experiments/{id}: the registered experiments, and one's report
(per-arm counts, rates with intervals, the comparison with the control, the SRM check)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from api.breaker import Budget
from api.deps import ServicesDep
from api.models import ExperimentReport, ExperimentSummary, error_responses
from core import experiment_store
from core.experiment_report import build_report

router = APIRouter(tags=["experiments"])

ExperimentId = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The experiment's id: 1 to 64 letters, digits, '_', '.' or '-'.",
        openapi_examples={"homepage": {"summary": "an experiment's id", "value": "homepage"}},
    ),
]


@router.get("/experiments", responses=error_responses(503))
async def list_experiments(services: ServicesDep) -> list[ExperimentSummary]:
    """Every experiment registered, newest first (`recsys experiments list`)."""
    budget = Budget(services.settings.api_request_budget_ms / 1000)
    redis = services.redis
    found = await services.backends.redis_guard.call(
        "experiments", budget, lambda: experiment_store.all_registered(redis)
    )
    return [
        ExperimentSummary(
            id=r.experiment.id,
            running=r.running,
            created_s=r.created_s,
            stopped_s=r.stopped_s,
            arms=[
                {"name": arm.name, "share": arm.share, "params": arm.params}
                for arm in r.experiment.arms
            ],
        )
        for r in found
    ]


@router.get(
    "/experiments/{experiment_id}",
    responses=error_responses(404, 422, 503, e404="No experiment of that id was registered."),
)
async def experiment_report(experiment_id: ExperimentId, services: ServicesDep) -> ExperimentReport:
    """The experiment's report, from the stream's counters (`recsys experiments report`)."""
    # Reading every bucket's counters is a SCAN: a report gets a budget of its own.
    budget = Budget(max(services.settings.api_request_budget_ms / 1000, 10.0))
    redis = services.redis
    guard = services.backends.redis_guard
    found = await guard.call(
        "experiment", budget, lambda: experiment_store.registered(redis, experiment_id)
    )
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no experiment {experiment_id!r}")
    counts = await guard.call(
        "experiment_counts", budget, lambda: experiment_store.read_counts(redis, experiment_id)
    )
    return ExperimentReport.model_validate(build_report(found, counts))
