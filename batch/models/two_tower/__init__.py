"""The two-tower retrieval model (item tower on id + content, user tower on recent history)."""

from batch.models.two_tower.model import TwoTowerRecommender

__all__ = ["TwoTowerRecommender"]
