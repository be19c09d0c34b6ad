"""`recsys.faults.read_only`, the soak's "archive unwritable" fault: while it holds, no new file
can be made in the directory even as root; afterwards the directory is as it was. Skipped where
mounting is not permitted."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from recsys.faults import FaultUnavailableError, read_only

pytestmark = pytest.mark.integration


def test_a_read_only_directory_refuses_new_files_and_comes_back(tmp_path: Path) -> None:
    table = tmp_path / "archive"
    table.mkdir()
    (table / "before.parquet").write_bytes(b"kept")
    try:
        with read_only(table):
            assert (table / "before.parquet").read_bytes() == b"kept"
            with pytest.raises(OSError, match="Read-only") as refused:
                (table / "new.parquet").write_bytes(b"x")
            assert refused.value.errno == errno.EROFS
            with pytest.raises(OSError, match="Read-only"):
                (table / "_delta_log").mkdir()
    except FaultUnavailableError as exc:
        pytest.skip(f"cannot mount here: {exc}")
    (table / "after.parquet").write_bytes(b"y")
    assert sorted(p.name for p in table.iterdir()) == ["after.parquet", "before.parquet"]
