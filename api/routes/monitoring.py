"""GET /monitoring/drift: the active version's input drift, live against its training baseline."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.drift import DriftMonitor, DriftReport

router = APIRouter(tags=["operations"])


@router.get("/monitoring/drift")
async def drift_report(request: Request) -> DriftReport:
    """Per distribution (event types, item popularity, user activity, served scores, the
    ranker's features): its population stability index over the window, the threshold, and
    the baseline's and the window's share per bin. Always 200: `status` says when there is no
    baseline, no live data yet, or Redis could not be read (see docs/operations.md, "Drift")."""
    monitor: DriftMonitor = request.app.state.drift
    return await monitor.report()
