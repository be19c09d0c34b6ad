"""Datasets for the batch side: MovieLens, any CSV/Parquet event log, and a synthetic generator.

`load_dataset` is the one entry point: it takes a dataset name or a file path and returns a
`batch.data.Dataset`. The names below are imported on first use (PEP 562), so that importing
one light submodule (the CLI, the downloader) does not pull in pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batch.datasets.archive import ArchiveWindow, load_archive, load_archive_configured
    from batch.datasets.download import ARCHIVES, GROUPLENS_BASE_URL, download_dataset
    from batch.datasets.importer import import_interactions
    from batch.datasets.loading import DATASET_NAMES, load_dataset
    from batch.datasets.movielens import load_ml_1m, load_ml_100k, load_ml_latest_small
    from batch.datasets.synthetic import SyntheticConfig, generate_synthetic

_HOME = {
    "ArchiveWindow": "archive",
    "load_archive": "archive",
    "load_archive_configured": "archive",
    "ARCHIVES": "download",
    "GROUPLENS_BASE_URL": "download",
    "download_dataset": "download",
    "import_interactions": "importer",
    "DATASET_NAMES": "loading",
    "load_dataset": "loading",
    "load_ml_1m": "movielens",
    "load_ml_100k": "movielens",
    "load_ml_latest_small": "movielens",
    "SyntheticConfig": "synthetic",
    "generate_synthetic": "synthetic",
}

__all__ = [
    "ARCHIVES",
    "DATASET_NAMES",
    "GROUPLENS_BASE_URL",
    "ArchiveWindow",
    "SyntheticConfig",
    "download_dataset",
    "generate_synthetic",
    "import_interactions",
    "load_archive",
    "load_archive_configured",
    "load_dataset",
    "load_ml_1m",
    "load_ml_100k",
    "load_ml_latest_small",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'batch.datasets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"batch.datasets.{module}"), name)
