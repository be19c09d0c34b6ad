"""Training groups from what users were shown: each archived impression whose user then acted on
one of its items is a group of the ranker's training rows, the items acted on labelled 1 and the
others 0.

The next-item groups of `batch.ranking.train` only say which item a user took next among all the
candidates; an impression also says which items they were shown and passed over, which is what a
ranker most needs to learn once the system serves real traffic. An item counts as acted on when
its user clicked or purchased it (`core.attribution.ACTED_TYPES`) within the attribution window
after the impression (`RECSYS_EXPERIMENT_ATTRIBUTION_WINDOW_S`): last touch, as attribution
credits experiment arms. Impressions come from the event archive (`batch.datasets.archive`,
`Dataset.impressions`); the datasets on file have none, so their rankers learn from next items
only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.attribution import ACTED_TYPES


@dataclass(frozen=True)
class ImpressionGroup:
    """One impression as a training group: its items in the order shown, and which were acted
    on."""

    ts: int  # epoch seconds
    user_id: str
    item_ids: list[str]
    labels: list[int]


def impression_groups(
    impressions: pd.DataFrame, interactions: pd.DataFrame, window_s: float
) -> list[ImpressionGroup]:
    """The impressions (`batch.data.IMPRESSION_COLUMNS`) that got a click or purchase of one
    of their items from their user within `window_s` after them, in time order (ties by id);
    an impression nobody acted on teaches nothing about the order and is left out."""
    if impressions.empty:
        return []
    acted = interactions.loc[
        interactions["event_type"].isin(ACTED_TYPES), ["user_id", "item_id", "ts"]
    ].rename(columns={"ts": "acted_ts"})
    joined = impressions.merge(acted, on=["user_id", "item_id"], how="left")
    delay = joined["acted_ts"] - joined["ts"]
    joined["acted"] = (delay >= 0) & (delay <= window_s)
    shown = (
        joined.groupby(["recommendation_id", "position"], sort=False)
        .agg(user_id=("user_id", "first"), item_id=("item_id", "first"), ts=("ts", "first"),
             acted=("acted", "any"))
        .reset_index()
    )  # fmt: skip
    groups = []
    for _, rows in shown.sort_values(["ts", "recommendation_id", "position"]).groupby(
        "recommendation_id", sort=False
    ):
        if not rows["acted"].any():
            continue
        groups.append(
            ImpressionGroup(
                ts=int(rows["ts"].iloc[0]),
                user_id=str(rows["user_id"].iloc[0]),
                item_ids=[str(item) for item in rows["item_id"]],
                labels=[int(flag) for flag in rows["acted"]],
            )
        )
    groups.sort(key=lambda group: group.ts)  # stable: the sort above ordered ties
    return groups
