"""SQLite's writer queue: a bulk writer pauses between batches only when another process waits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from perkflow.core.db import WriterQueue, fcntl

pytestmark = pytest.mark.skipif(fcntl is None, reason="flock is POSIX-only")

WAITER = """
import sys
from perkflow.core.db import WriterQueue
queue = WriterQueue(sys.argv[1])
queue.acquire()
print("acquired", flush=True)
sys.stdin.read()
queue.release()
"""


def wait_until(condition: object, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_writer_sees_whether_another_process_waits_for_its_turn(tmp_path: Path) -> None:
    path = str(tmp_path / "db-writer.lock")
    queue = WriterQueue(path)
    queue.acquire()
    assert not queue.others_waiting()
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAITER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(queue.others_waiting), "the blocked process was not seen waiting"
        queue.release()
        assert waiter.stdout is not None
        assert waiter.stdout.readline().strip() == "acquired"
        # It holds the lock now and no longer waits.
        assert not queue.others_waiting()
    finally:
        if waiter.stdin is not None:
            waiter.stdin.close()
        waiter.wait(timeout=20)
    assert waiter.returncode == 0
    queue.acquire()  # released by the other process
    queue.release()
