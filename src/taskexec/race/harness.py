"""The race itself: W writers on keep-alive connections, held at a barrier, each
PUTting a value as the FIRST write for the same fresh task instance."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

import httpx


@dataclasses.dataclass(frozen=True)
class Target:
    """A task instance to race on, with its token."""

    id: str
    token: str
    # (dag_id, run_id, task_id, map_index), when known: for a read-back by key.
    key: tuple[str, str, str, int] | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """One PUT as a writer saw it."""

    round: int
    writer: int
    status: int  # 0: no HTTP answer (a transport error)
    seconds: float
    reason: str
    value: str

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300


def _reason(resp: httpx.Response) -> str:
    if resp.is_success:
        return ""
    try:
        detail = resp.json().get("detail")
    except ValueError:
        return f"http_{resp.status_code}"
    if isinstance(detail, dict):
        return str(detail.get("reason", f"http_{resp.status_code}"))
    return str(detail)[:60]


def race(
    base_url: str,
    targets: Sequence[Target],
    writers: int,
    *,
    duplicate: bool = False,
    on_round: Callable[[int], None] | None = None,
    timeout: float = 60.0,
) -> tuple[list[list[Request]], float]:
    """One round per target. Returns the requests of each round and the elapsed seconds.

    ``duplicate``: every writer sends the same value, i.e. the same PUT repeated while
    the first is in flight, as a client retrying after a timeout does.
    """
    barrier = threading.Barrier(writers, timeout=timeout)
    rounds: list[list[Request]] = [[] for _ in targets]
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=timeout) as client:
                client.get("/health")  # open the keep-alive connection before racing
                for r, target in enumerate(targets):
                    value = f"round-{r}" if duplicate else f"writer-{w}-round-{r}"
                    barrier.wait()
                    started = time.perf_counter()
                    try:
                        resp = client.put(
                            f"/execution/task-instances/{target.id}/rtif",
                            json={"bash_command": value, "writer": -1 if duplicate else w},
                            headers={"Authorization": f"Bearer {target.token}"},
                        )
                        status, reason = resp.status_code, _reason(resp)
                    except httpx.TransportError as exc:
                        status, reason = 0, type(exc).__name__
                    record = Request(r, w, status, time.perf_counter() - started, reason, value)
                    with lock:
                        rounds[r].append(record)
                        done = len(rounds[r]) == writers
                    if done and on_round is not None:
                        on_round(r)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout * (len(targets) + 1))
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return rounds, elapsed
