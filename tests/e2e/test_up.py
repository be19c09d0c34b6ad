"""`recsys up` end to end: the whole stack as a user runs it, then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.datasets import load_dataset
from infra.local.process import free_port
from recsys.client import RecsysClient
from schemas import new_event

pytestmark = pytest.mark.e2e


def _processes_mentioning(*needles: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(n in cmdline for n in needles):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


class Stack:
    def __init__(self, tmp_path: Path) -> None:
        self.api_port, self.kafka_port, self.redis_port = free_port(), free_port(), free_port()
        self.worker_port = free_port()
        self.state_dir = tmp_path / "state"
        self.log = tmp_path / "up.log"
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.env = {
            **os.environ,
            "RECSYS_STATE_DIR": str(self.state_dir),
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_port}",
            "RECSYS_KAFKA_CONTROLLER_PORT": str(free_port()),
            "RECSYS_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recsys", "up", "--port", str(self.api_port),
                 "--worker-web-port", str(self.worker_port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if "recsys is up" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise AssertionError(f"recsys up did not come up:\n{self.log.read_text()}")

    def interrupt(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.proc.wait(timeout=120)

    def needles(self) -> tuple[str, ...]:
        return (str(self.state_dir), f"--port {self.api_port}", f"127.0.0.1:{self.redis_port}",
                f"--web-port {self.worker_port}")  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    running.start()
    yield running
    if running.proc is not None and running.proc.poll() is None:
        running.interrupt()


def test_up_serves_fresh_recommendations_and_stops_cleanly(stack: Stack) -> None:
    # The model it trained was chosen on the data's own validation split, above popularity.
    started = stack.log.read_text(errors="replace")
    assert "on the data's temporal validation (P1)" in started
    assert "not above" not in started
    # Through the typed client, as a user's service would call it.
    with RecsysClient(stack.base) as api:
        assert api.ready().status == "ok"
        assert api.recommend("nobody-yet").source in ("trending", "popular")

        # The default dataset of `recsys up` is the seeded synthetic one: pick a genre's items.
        items = load_dataset("synthetic", stack.state_dir).items
        genre = "Documentary"
        in_genre = [
            i for i, g in zip(items["item_id"], items["genres"], strict=True) if g == (genre,)
        ]
        user = f"newcomer-{uuid.uuid4().hex[:6]}"
        assert api.post_events([new_event("purchase", user, i) for i in in_genre[:5]]).accepted == 5

        deadline = time.monotonic() + 2.0  # the freshness promise for this flow
        answer = api.recommend(user, diversity=1.0)
        while answer.source != "personalized" and time.monotonic() < deadline:
            time.sleep(0.05)
            answer = api.recommend(user, diversity=1.0)
        assert answer.source == "personalized", answer
        genres = Counter(g for item in answer.items for g in item.genres)
        # The genre leads the list (a tie with the most popular genre is allowed: the model
        # chosen on validation weighs popularity, as the data rewards it).
        assert genres[genre] == max(genres.values()), genres
        assert genres[genre] >= 3, genres
        profile = api.profile(user)
        assert profile.events == 5
        assert {h.item_id for h in profile.history} == set(in_genre[:5])

    assert _processes_mentioning(*stack.needles())  # the stack really ran
    assert stack.interrupt() == 0
    assert "Stopped." in stack.log.read_text()
    time.sleep(1)
    assert _processes_mentioning(*stack.needles()) == []
