"""`load_dataset`: a dataset by name or from a file."""

from __future__ import annotations

from pathlib import Path

from batch.data import Dataset, DatasetError
from batch.datasets.download import download_dataset
from batch.datasets.importer import import_interactions
from batch.datasets.movielens import LOADERS
from batch.datasets.synthetic import SyntheticConfig, generate_synthetic

DATASET_NAMES = (*LOADERS, "synthetic")


def load_dataset(
    name_or_path: str | Path,
    data_dir: str | Path,
    *,
    skip_malformed: bool = False,
    download: bool = False,
) -> Dataset:
    """Load a dataset by name or from a file.

    Parameters
    ----------
    name_or_path
        "ml-100k", "ml-1m", "ml-latest-small" (read from `<data_dir>/<name>/`); "synthetic"
        (2,000 users x 500 items x 50,000 events) or "synthetic:users=...,items=...,
        events=...,seed=..." (any `SyntheticConfig` field); or a path to a .csv/.parquet
        interaction log (see `import_interactions`).
    data_dir
        Where MovieLens folders are read from and downloaded to (Settings.data_dir).
    skip_malformed
        Skip and count malformed rows (`Dataset.skipped_rows`) instead of raising.
    download
        Download a missing MovieLens dataset from GroupLens first; never done unless asked.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unknown name, missing files (the message says how to get them), malformed rows,
        or no interactions.
    """
    text = str(name_or_path)
    if text in LOADERS:
        if download:
            download_dataset(text, Path(data_dir))
        return LOADERS[text](Path(data_dir), skip_malformed=skip_malformed)
    if text == "synthetic" or text.startswith("synthetic:"):
        return generate_synthetic(SyntheticConfig.from_spec(text.partition(":")[2]))
    path = Path(text).expanduser()
    if path.suffix.lower() in (".csv", ".parquet"):
        return import_interactions(path, skip_malformed=skip_malformed)
    raise DatasetError(
        f"unknown dataset {text!r}: expected one of {', '.join(DATASET_NAMES)}, "
        "'synthetic:users=...,items=...,events=...,seed=...', or a .csv/.parquet file"
    )
