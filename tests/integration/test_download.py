"""Downloading archives over real HTTP from a local server that serves archives the test builds."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batch.data import DatasetError
from batch.datasets import download_dataset, load_dataset
from batch.datasets.download import MARKER_FILE
from recsys.commands.data import app

pytestmark = pytest.mark.integration

RATINGS = "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,10,3.5,964982704\n"
MOVIES = "movieId,title,genres\n10,GoldenEye (1995),Action|Adventure|Thriller\n"


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 and records the paths requested."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/movielens"

    def publish(self, name: str, archive: bytes, md5: str | None = None) -> None:
        self.files[f"/movielens/{name}.zip"] = archive
        published = md5 or hashlib.md5(archive).hexdigest()
        self.files[f"/movielens/{name}.zip.md5"] = f"MD5 ({name}.zip) = {published}\n".encode()


@pytest.fixture
def server() -> Iterator[FileServer]:
    files = FileServer()
    files.thread.start()
    try:
        yield files
    finally:
        files.httpd.shutdown()
        files.httpd.server_close()
        files.thread.join(timeout=5)


def make_zip(folder: str, members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, text in members.items():
            bundle.writestr(f"{folder}/{name}", text)
    return buffer.getvalue()


def leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


def test_download_verifies_unpacks_and_then_skips(server: FileServer, tmp_path: Path) -> None:
    archive = make_zip("ml-latest-small", {"ratings.csv": RATINGS, "movies.csv": MOVIES})
    server.publish("ml-latest-small", archive)
    data_dir = tmp_path / "data"
    result = download_dataset(
        "ml-latest-small", data_dir, base_url=server.base_url, show_progress=False
    )
    assert result.downloaded
    assert result.md5 == hashlib.md5(archive).hexdigest()
    assert result.path == data_dir / "ml-latest-small"
    assert leftovers(data_dir) == ["ml-latest-small", "ml-latest-small.zip"]  # no temp files
    assert (data_dir / "ml-latest-small.zip").read_bytes() == archive
    dataset = load_dataset("ml-latest-small", data_dir)
    assert dataset.interactions["ts"].tolist() == [964982703, 964982704]
    assert dataset.items["title"].tolist() == ["GoldenEye"]
    assert server.requests == [
        "/movielens/ml-latest-small.zip.md5",
        "/movielens/ml-latest-small.zip",
    ]

    again = download_dataset("ml-latest-small", data_dir, base_url=server.base_url)
    assert not again.downloaded
    assert again.md5 == result.md5
    assert len(server.requests) == 2  # present and verified: no request at all


def test_load_dataset_downloads_only_when_asked(server: FileServer, tmp_path: Path) -> None:
    server.publish(
        "ml-latest-small",
        make_zip("ml-latest-small", {"ratings.csv": RATINGS, "movies.csv": MOVIES}),
    )
    with pytest.raises(DatasetError, match="recsys data download ml-latest-small"):
        load_dataset("ml-latest-small", tmp_path)
    assert server.requests == []
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["download", "ml-latest-small", "--data-dir", str(tmp_path), "--base-url", server.base_url],
    )
    assert done.exit_code == 0, done.output
    assert "downloaded" in done.output
    assert load_dataset("ml-latest-small", tmp_path).n_interactions == 2


def test_pinned_checksum_mismatch_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    # ml-100k's MD5 is pinned in the code: an archive that differs must be refused even
    # though the mirror publishes a matching .md5 next to it.
    server.publish("ml-100k", make_zip("ml-100k", {"u.data": "1\t2\t3\t4\n", "u.item": "x"}))
    with pytest.raises(
        DatasetError, match=r"checksum mismatch .* expected MD5 0e33842e24a9c977be4e0107933c0723"
    ):
        download_dataset("ml-100k", tmp_path, base_url=server.base_url, show_progress=False)
    assert leftovers(tmp_path) == []
    assert server.requests == ["/movielens/ml-100k.zip"]


def test_published_checksum_mismatch_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    archive = make_zip("ml-latest-small", {"ratings.csv": RATINGS, "movies.csv": MOVIES})
    server.publish("ml-latest-small", archive, md5="0" * 32)
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        download_dataset("ml-latest-small", tmp_path, base_url=server.base_url, show_progress=False)
    assert hashlib.md5(archive).hexdigest() in str(info.value)
    assert leftovers(tmp_path) == []


def test_explicit_md5_and_replacing_a_stale_folder(server: FileServer, tmp_path: Path) -> None:
    lines = "196\t242\t3\t881250949\n"
    item = "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    archive = make_zip("ml-100k", {"u.data": lines, "u.item": item + "\n"})
    server.publish("ml-100k", archive)
    md5 = hashlib.md5(archive).hexdigest()
    first = download_dataset(
        "ml-100k", tmp_path, base_url=server.base_url, md5=md5, show_progress=False
    )
    assert first.downloaded
    assert md5 in (tmp_path / "ml-100k" / MARKER_FILE).read_text()
    assert load_dataset("ml-100k", tmp_path).items["genres"].tolist() == [("Comedy",)]
    # a folder unpacked from another archive is replaced, from the verified zip kept in the cache
    (tmp_path / "ml-100k" / MARKER_FILE).write_text('{"md5": "' + "f" * 32 + '"}')
    (tmp_path / "ml-100k" / "u.data").write_text("stale\n")
    requests = len(server.requests)
    replaced = download_dataset("ml-100k", tmp_path, base_url=server.base_url, md5=md5)
    assert replaced.downloaded
    assert (tmp_path / "ml-100k" / "u.data").read_text() == lines
    assert len(server.requests) == requests
    # --force fetches again
    forced = download_dataset(
        "ml-100k", tmp_path, base_url=server.base_url, md5=md5, force=True, show_progress=False
    )
    assert forced.downloaded
    assert len(server.requests) == requests + 1
    assert leftovers(tmp_path) == ["ml-100k", "ml-100k.zip"]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/movielens"
    with pytest.raises(DatasetError, match=re.escape(f"could not download {url}/ml-100k.zip")):
        download_dataset("ml-100k", tmp_path, base_url=url, timeout=5, show_progress=False)
    assert leftovers(tmp_path) == []
    result = CliRunner().invoke(
        app, ["download", "ml-100k", "--data-dir", str(tmp_path), "--base-url", url]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: could not download")
    assert "Traceback" not in result.output


def test_missing_archive_and_present_copy(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"ml-latest-small\.zip\.md5 failed: HTTP 404"):
        download_dataset("ml-latest-small", tmp_path, base_url=server.base_url, show_progress=False)
    # a copy put there by hand (no marker) is used as it is, without asking the server
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::2::3::4\n")
    (folder / "movies.dat").write_text("2::Heat (1995)::Action\n")
    result = download_dataset("ml-1m", tmp_path, base_url=server.base_url)
    assert not result.downloaded
    assert result.md5 is None
    assert server.requests == ["/movielens/ml-latest-small.zip.md5"]
