"""Large adversarial bodies do not stall a server process: four writers sending 1 MiB
bodies of 200,000 one-element lists (the costliest shape to walk and mask) while a
small writer measures its PUTs. The figures are reported; the assertion is a loose
bound that the old design (masking on the event loop: p99 3.5 s) failed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from taskexec.config import Settings
from taskexec.race import bench
from taskexec.race.stats import percentile

from helpers import auth, only, report, seed, serve_env, wait_healthy

pytestmark = pytest.mark.fault

BODY = json.dumps({"a": [[1]] * 200_000}).encode()


def _small_puts(base: str, ti: object, seconds: float) -> list[float]:
    took: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            resp = client.put(
                f"/execution/task-instances/{ti.id}/rtif",  # type: ignore[attr-defined]
                json={"x": 1},
                headers=auth(ti.token),  # type: ignore[attr-defined]
            )
            took.append(time.monotonic() - started)
            assert resp.status_code == 201, resp.text
            time.sleep(0.01)
    return took


def _large_puts(base: str, ti: object, stop: threading.Event, done: list[int]) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        while not stop.is_set():
            client.put(
                f"/execution/task-instances/{ti.id}/rtif",  # type: ignore[attr-defined]
                content=BODY,
                headers={**auth(ti.token), "content-type": "application/json"},  # type: ignore[attr-defined]
            )
            done.append(1)


@only("postgresql")
def test_large_bodies_do_not_stall_small_ones(settings: Settings) -> None:
    small, *large = seed(settings, tasks=5).task_instances
    port = bench.free_port()
    command = [sys.executable, "-m", "taskexec", "serve", "--port", str(port)]
    env = serve_env(settings, TASKEXEC_SCHEDULER_IN_SERVER="false")
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(port)
        alone = _small_puts(base, small, 3)
        stop, done = threading.Event(), []
        writers = [
            threading.Thread(target=_large_puts, args=(base, ti, stop, done)) for ti in large
        ]
        for writer in writers:
            writer.start()
        time.sleep(1)
        loaded = _small_puts(base, small, 5)
        stop.set()
        for writer in writers:
            writer.join(60)
    finally:
        proc.terminate()
        proc.wait(20)
    rise = percentile(loaded, 99) - percentile(alone, 99)
    report(
        f"[postgresql] small PUT p99 {percentile(alone, 99) * 1000:.1f} ms alone, "
        f"{percentile(loaded, 99) * 1000:.1f} ms beside 4 writers of 1 MiB adversarial bodies "
        f"(rise {rise * 1000:.1f} ms, {len(done)} large bodies stored, {len(loaded)} small PUTs)"
    )
    assert len(done) > 0 and rise < 1.0
