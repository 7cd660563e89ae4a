"""SQLite's write queue across processes (``db.sqlite_queue``): one writer at a time on
one database file, the next one let in when the previous one is done, a waiter that
gives up leaves no lock behind, and a writer killed with ``kill -9`` lets the others go.

Each ``WriteQueue`` opens the lock file itself, so two queues in one process are two
holders for the kernel, as two server processes are."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from taskexec.db import sqlite_queue
from taskexec.db.sqlite_queue import WriteQueue

_HOLDER = (
    "import asyncio, sys\n"
    "from pathlib import Path\n"
    "from taskexec.db.sqlite_queue import WriteQueue\n"
    "async def main():\n"
    "    async with WriteQueue(Path(sys.argv[1])).turn():\n"
    "        print('holding', flush=True)\n"
    "        await asyncio.sleep(3600)\n"
    "asyncio.run(main())\n"
)


def _holding(database: Path) -> subprocess.Popen[str]:
    """Another process that holds the write turn (as a server stuck mid-write would)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(database)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


async def _gives_up(queue: WriteQueue, seconds: float) -> None:
    """Wait for a turn that another holder keeps, and give up after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            async with queue.turn():
                raise AssertionError("got a turn while another held it")
    except TimeoutError:
        pass


def test_writers_of_two_queues_take_turns(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    first, second = WriteQueue(database), WriteQueue(database)
    events: list[str] = []

    async def writer(queue: WriteQueue, name: str, hold: float) -> None:
        async with queue.turn():
            events.append(f"{name} in")
            await asyncio.sleep(hold)
            events.append(f"{name} out")

    async def main() -> None:
        one = asyncio.create_task(writer(first, "a", 0.2))
        await asyncio.sleep(0.05)  # a holds its turn
        await asyncio.gather(one, writer(second, "b", 0), writer(first, "c", 0))

    asyncio.run(main())
    assert events[:2] == ["a in", "a out"]
    # Nobody in while another is: every "in" is followed by its own "out".
    assert [e.split()[1] for e in events] == ["in", "out"] * 3
    first.close()
    second.close()


def test_a_waiter_that_gives_up_leaves_the_queue_free(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    holder, waiter = WriteQueue(database), WriteQueue(database)

    async def main() -> None:
        release = asyncio.Event()

        async def hold() -> None:
            async with holder.turn():
                await release.wait()

        held = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        # Gives up while its thread waits for the file lock.
        await _gives_up(waiter, 0.1)
        release.set()
        await held
        # The thread of the one that gave up got the lock later, and gave it back:
        # both queues get turns again, one after the other.
        async with asyncio.timeout(5):
            async with waiter.turn():
                pass
            async with holder.turn():
                pass

    asyncio.run(main())
    holder.close()
    waiter.close()


def test_a_killed_holder_lets_the_others_in(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    holder = _holding(database)
    queue = WriteQueue(database)

    async def main() -> None:
        await _gives_up(queue, 0.3)
        os.kill(holder.pid, signal.SIGKILL)
        async with asyncio.timeout(5):
            async with queue.turn():
                pass

    try:
        asyncio.run(main())
    finally:
        _stop(holder)
    queue.close()
    assert sqlite_queue.lock_file(database).exists()


def test_an_in_memory_database_queues_within_the_process() -> None:
    queue = WriteQueue(None)
    order: list[int] = []

    async def writer(n: int) -> None:
        async with queue.turn():
            order.append(n)
            await asyncio.sleep(0)
            order.append(n)

    async def main() -> None:
        await asyncio.gather(*(writer(n) for n in range(3)))

    asyncio.run(main())
    assert order == [0, 0, 1, 1, 2, 2]


def test_a_process_that_gave_up_waiting_exits(tmp_path: Path) -> None:
    """Its thread may still wait for the file lock (the holder is stuck), but the
    process ends: a command that got its 503 does not hang at exit."""
    database = tmp_path / "t.db"
    holder = _holding(database)
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from taskexec.db.sqlite_queue import WriteQueue\n"
        "queue = WriteQueue(Path(sys.argv[1]))\n"
        "async def main():\n"
        "    try:\n"
        "        async with asyncio.timeout(0.2):\n"
        "            async with queue.turn():\n"
        "                raise SystemExit('got a turn while another process held it')\n"
        "    except TimeoutError:\n"
        "        print('gave up', flush=True)\n"
        "asyncio.run(main())\n"
        "queue.close()\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(database)],
            capture_output=True,
            text=True,
            timeout=60,  # the holder holds for an hour: only a hang reaches this
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "gave up"
    finally:
        _stop(holder)


def test_a_turn_given_up_in_a_closed_event_loop_does_not_hold_other_processes(
    tmp_path: Path,
) -> None:
    """A wait given up on in an event loop that then closed: when the file lock comes
    to it, nobody is left to take the turn, and it is given back at once."""
    database = tmp_path / "t.db"
    queue, other = WriteQueue(database), WriteQueue(database)
    holder = _holding(database)

    try:
        asyncio.run(_gives_up(queue, 0.2))
    finally:
        _stop(holder)

    async def turns() -> None:
        for _ in range(3):  # the file comes back each time
            async with asyncio.timeout(5):
                async with other.turn():
                    await asyncio.sleep(0.05)

    asyncio.run(turns())
    queue.close()
    other.close()
