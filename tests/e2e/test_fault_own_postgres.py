"""The fault suite's own PostgreSQL: a cluster of its own in a temporary directory on a
free port, under write load from concurrent writers (each reading back what it was
acknowledged), restarted fast, restarted immediate, and stopped with SIGSTOP for 20 s.

Asserted: every request gets an HTTP answer within the request deadline (503 with
Retry-After at worst), none is left to the client's own timeout, and no acknowledged
write is lost (each writer's stored value is its last acknowledged one or a later one).
Skipped where PostgreSQL's server binaries are not installed."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.db import connect, migrate
from taskexec.race import bench
from taskexec.server.app import create_app

from conftest import TEST_SECRET, run_server
from helpers import auth, report, seed

pytestmark = pytest.mark.fault

DEADLINE = 2.0
SLACK = 1.5
FREEZE_SECONDS = 20.0
WRITERS = 8


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory, run as the postgres user."""

    def __init__(self, root: Path, port: int) -> None:
        self.bin = _bin()
        assert self.bin is not None
        self.root, self.port, self.data = root, port, root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        subprocess.run([*user, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def pg_ctl(self, action: str, mode: str = "fast") -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-o", options,
            "-l", str(self.root / "log"), action,
        )  # fmt: skip

    def processes(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *map(int, children)]

    def signal_all(self, signum: int) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if _bin() is None or shutil.which("pgrep") is None:
        pytest.skip("PostgreSQL's server binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="taskexec-pg-"))
    cluster = OwnPostgres(root, bench.free_port())
    try:
        cluster.init()
        cluster.pg_ctl("start")
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.signal_all(signal.SIGCONT)
        with contextlib.suppress(Exception):
            cluster.pg_ctl("stop", "immediate")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Writer:
    """One writer's PUTs to its own task instance: what was acknowledged, and every
    answer's status and time."""

    ti: object
    acked: int = -1
    sent: int = 0
    answers: list[tuple[float, int, float]] = field(default_factory=list)  # (at, status, took)
    unanswered: int = 0


def _write(base_url: str, writer: Writer, stop: threading.Event) -> None:
    ti = writer.ti
    with httpx.Client(base_url=base_url, timeout=DEADLINE + 10) as client:
        while not stop.is_set():
            n = writer.sent
            writer.sent += 1
            started = time.monotonic()
            try:
                resp = client.put(
                    f"/execution/task-instances/{ti.id}/rtif",  # type: ignore[attr-defined]
                    json={"n": n},
                    headers=auth(ti.token),  # type: ignore[attr-defined]
                )
            except httpx.TransportError:
                writer.unanswered += 1
                continue
            took = time.monotonic() - started
            writer.answers.append((started, resp.status_code, took))
            if resp.status_code == 201:
                writer.acked = n
            else:
                assert resp.status_code == 503 and resp.headers.get("retry-after"), resp.text
                time.sleep(0.05)


def test_restarts_and_a_20_s_freeze_under_write_load(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    engine = connect.make_sync_engine(own_postgres.url, Settings())
    migrate.upgrade(engine)
    settings = Settings(
        database_url=own_postgres.url,
        data_dir=tmp_path / "data",
        jwt_secret=TEST_SECRET,  # type: ignore[arg-type]
        request_timeout_seconds=DEADLINE,
        scheduler_in_server=False,
    )
    run = seed(settings, tasks=WRITERS)
    writers = [Writer(ti) for ti in run.task_instances]
    stop = threading.Event()
    events: dict[str, float] = {}
    with run_server(create_app(settings)) as live:
        threads = [threading.Thread(target=_write, args=(live.base_url, w, stop)) for w in writers]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            events["restart fast"] = time.monotonic()
            own_postgres.pg_ctl("restart", "fast")
            time.sleep(3)
            events["restart immediate"] = time.monotonic()
            own_postgres.pg_ctl("restart", "immediate")
            time.sleep(3)
            events["freeze"] = time.monotonic()
            own_postgres.signal_all(signal.SIGSTOP)
            time.sleep(FREEZE_SECONDS)
            own_postgres.signal_all(signal.SIGCONT)
            events["thaw"] = time.monotonic()
            time.sleep(4)
        finally:
            own_postgres.signal_all(signal.SIGCONT)
            stop.set()
            for thread in threads:
                thread.join(30)
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                sa.text(
                    "SELECT ti.id, r.rendered_fields FROM rendered_task_instance_fields r "
                    "JOIN task_instance ti ON ti.dag_id = r.dag_id AND ti.task_id = r.task_id "
                    "AND ti.run_id = r.run_id AND ti.map_index = r.map_index"
                )
            ).all()
        )
    engine.dispose()
    answers = [a for w in writers for a in w.answers]
    statuses = {s: sum(1 for _, st, _ in answers if st == s) for s in {st for _, st, _ in answers}}
    slowest = max(took for _, _, took in answers)
    lost = [
        w
        for w in writers
        if w.acked >= 0 and _stored_n(stored.get(w.ti.id)) < w.acked  # type: ignore[attr-defined]
    ]
    after_thaw = [at + took for at, st, took in answers if st == 201 and at >= events["thaw"]]
    recovery = min(after_thaw) - events["thaw"] if after_thaw else float("inf")
    report(
        f"[own postgresql] restart fast, restart immediate, SIGSTOP {FREEZE_SECONDS:g} s under "
        f"{WRITERS} writers: {len(answers)} answers {statuses}, slowest {slowest:.2f} s "
        f"(deadline {DEADLINE:g} s), unanswered {sum(w.unanswered for w in writers)}, "
        f"acknowledged writes lost {len(lost)}, first 201 {recovery:.2f} s after the thaw"
    )
    assert not lost
    assert sum(w.unanswered for w in writers) == 0
    assert slowest < DEADLINE + SLACK
    assert statuses.get(201, 0) > 0 and recovery < 10


def _stored_n(fields: object) -> int:
    if isinstance(fields, str):
        import json

        fields = json.loads(fields)
    return int(fields["n"]) if isinstance(fields, dict) else -1
