"""The retraining loop (`recsys retrain`): train a candidate on the event archive, score it and
the active version on the newest held-out events, and publish it only if it is not worse than
the active version by more than a margin of NDCG@10 (the gate). Every decision is recorded
(`core.model_version.record_decision`) and exported as metrics (`batch.retrain.metrics`)."""
