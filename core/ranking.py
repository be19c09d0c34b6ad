"""The ranking stage's features: one list, in one order, for training (`batch.models.two_stage`)
and for serving (the API's ranker, issue 18), and versioned with the model that learned it.

Per (user, candidate item):
  ann_score, ann_rank               the ALS dot product of user and item, and its rank among the
                                    user's unseen items (rank = candidates + 1 when the source
                                    did not propose the item; score 0)
  transition_score, transition_rank recency-decayed counts of users' steps to the item from the
                                    user's latest items (1, 1/2, 1/4 for the latest three)
  recent_score, recent_rank         the item's recency-decayed interaction weight
  item_popularity                   log(1 + the item's all-time interaction weight)
  user_events                       log(1 + the user's events)
  user_idle_s                       log(1 + seconds from the user's last event to now)
  last_item_similarity              cosine of the item's and the user's last item's vectors
"""

from __future__ import annotations

FEATURES: tuple[str, ...] = (
    "ann_score",
    "ann_rank",
    "transition_score",
    "transition_rank",
    "recent_score",
    "recent_rank",
    "item_popularity",
    "user_events",
    "user_idle_s",
    "last_item_similarity",
)
FEATURE_VERSION = 1
