"""Downloading the MovieLens archives from GroupLens into the data directory.

The archive is streamed to a temporary file next to its final place, hashed on the way,
and only renamed into place once its MD5 matches; it is then unpacked into a temporary
folder that is renamed to `<data_dir>/<name>` in one step. An interrupted or failed
download therefore never leaves a half-written archive or dataset folder behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from batch.errors import DatasetError

log = logging.getLogger(__name__)

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"
# Written into a downloaded dataset folder: which archive (and MD5) it was unpacked from.
MARKER_FILE = ".recsys-download.json"
_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class Archive:
    """One GroupLens archive: `<base_url>/<name>.zip`, unpacking to a `<name>/` folder."""

    name: str
    # The MD5 GroupLens publishes in `<name>.zip.md5`, pinned here so that a tampered mirror
    # cannot ship a matching checksum. None: the dataset changes between releases (GroupLens
    # calls ml-latest-small a development dataset), so the published .md5 is fetched instead.
    md5: str | None
    required: tuple[str, ...]

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.name}.zip"


ARCHIVES: dict[str, Archive] = {
    "ml-100k": Archive("ml-100k", "0e33842e24a9c977be4e0107933c0723", ("u.data", "u.item")),
    "ml-1m": Archive("ml-1m", "c4d9eecfca2ab87c1945afe126590906", ("ratings.dat", "movies.dat")),
    "ml-latest-small": Archive("ml-latest-small", None, ("ratings.csv", "movies.csv")),
}


@dataclass(frozen=True)
class DownloadResult:
    path: Path  # the dataset folder
    downloaded: bool  # False: it was already present
    md5: str | None  # the verified archive MD5 (None for a folder recsys did not download)


def download_dataset(
    name: str,
    data_dir: Path,
    *,
    base_url: str = GROUPLENS_BASE_URL,
    md5: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
    show_progress: bool = True,
) -> DownloadResult:
    """Download and unpack one MovieLens archive into `<data_dir>/<name>`, unless present.

    Parameters
    ----------
    name
        One of `ARCHIVES` ("ml-100k", "ml-1m", "ml-latest-small").
    data_dir
        The cache directory (RECSYS_DATA_DIR); created when missing.
    base_url
        Where the archives live; a mirror (or a test server) replaces GroupLens here.
    md5
        Expected archive MD5; default: the pinned value, else the `<archive url>.md5` file.
    force
        Download and unpack again even when the folder is present.
    timeout
        Seconds to wait for the server at each step (connect, each read).
    show_progress
        Draw a rich progress bar on stderr.

    Returns
    -------
    DownloadResult
        The dataset folder, whether it was downloaded now, and the verified MD5.

    Raises
    ------
    DatasetError
        Unknown name, server unreachable or answering an error, checksum mismatch, bad zip.
    """
    archive = ARCHIVES.get(name)
    if archive is None:
        raise DatasetError(f"unknown dataset {name!r}; downloadable: {', '.join(ARCHIVES)}")
    data_dir = Path(data_dir).expanduser()
    target = data_dir / name
    known_md5 = (md5 or archive.md5 or "").lower() or None
    if not force and all((target / f).is_file() for f in archive.required):
        recorded = _recorded_md5(target)
        if recorded is None or known_md5 is None or recorded == known_md5:
            log.info("%s already present in %s", name, target)
            return DownloadResult(target, downloaded=False, md5=recorded)
        log.warning(
            "%s in %s came from another archive (MD5 %s); replacing it", name, target, recorded
        )

    data_dir.mkdir(parents=True, exist_ok=True)
    url = archive.url(base_url)
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        expected = known_md5 or _published_md5(client, url)
        zip_path = data_dir / f"{name}.zip"
        if force or not zip_path.is_file() or _file_md5(zip_path) != expected:
            _fetch_verified(client, url, zip_path, expected, show_progress)
    _unpack(zip_path, archive, target, expected)
    return DownloadResult(target, downloaded=True, md5=expected)


def _published_md5(client: httpx.Client, url: str) -> str:
    """Read `<url>.md5`, e.g. "MD5 (ml-1m.zip) = c4d9...", or md5sum's "c4d9...  ml-1m.zip"."""
    text = _get(client, f"{url}.md5").decode("ascii", errors="replace")
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if found is None:
        raise DatasetError(f"{url}.md5 holds no MD5 checksum")
    return found.group(0).lower()


def _get(client: httpx.Client, url: str) -> bytes:
    try:
        response = client.get(url)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise DatasetError(f"download of {url} failed: HTTP {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise DatasetError(f"could not download {url}: {exc or type(exc).__name__}") from None
    return response.content


def _fetch_verified(
    client: httpx.Client, url: str, zip_path: Path, expected: str, show_progress: bool
) -> None:
    fd, part_name = tempfile.mkstemp(
        dir=zip_path.parent, prefix=f".{zip_path.name}.", suffix=".part"
    )
    part = Path(part_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, client.stream("GET", url) as response:
            response.raise_for_status()
            total = int(response.headers.get("Content-Length", 0)) or None
            with _progress(show_progress) as progress:
                task = progress.add_task(zip_path.name, total=total)
                for chunk in response.iter_bytes(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(task, advance=len(chunk))
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected:
            raise DatasetError(
                f"checksum mismatch for {url}: expected MD5 {expected}, got {actual}; "
                "the download was discarded (try again, or check the mirror)"
            )
        os.replace(part, zip_path)
    except httpx.HTTPStatusError as exc:
        raise DatasetError(f"download of {url} failed: HTTP {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise DatasetError(f"could not download {url}: {exc or type(exc).__name__}") from None
    finally:
        part.unlink(missing_ok=True)


def _unpack(zip_path: Path, archive: Archive, target: Path, md5: str) -> None:
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{archive.name}.unpack-"))
    try:
        try:
            with zipfile.ZipFile(zip_path) as bundle:
                for member in bundle.namelist():
                    # Refuse absolute paths and "..": a zip must not write outside its folder.
                    if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                        raise DatasetError(f"{zip_path}: unsafe path {member!r} in archive")
                bundle.extractall(staging)
        except zipfile.BadZipFile as exc:
            zip_path.unlink(missing_ok=True)
            raise DatasetError(
                f"{zip_path} is not a valid zip archive ({exc}); removed it"
            ) from None
        unpacked = staging / archive.name
        missing = [f for f in archive.required if not (unpacked / f).is_file()]
        if missing:
            raise DatasetError(f"{zip_path} lacks {archive.name}/{missing[0]}")
        (unpacked / MARKER_FILE).write_text(json.dumps({"archive": zip_path.name, "md5": md5}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _recorded_md5(folder: Path) -> str | None:
    try:
        value = json.loads((folder / MARKER_FILE).read_text()).get("md5")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value).lower() if value else None


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        disable=not show,
        transient=False,
    )
