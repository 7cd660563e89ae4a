"""Server processes that die with their supervisor.

``taskexec serve`` is a supervisor (uvicorn's) over its worker processes: it replaces a
worker that dies. The other way round, a worker must not outlive the supervisor (it
would keep the port, orphaned, and a new ``serve`` could not bind it): the supervisor
names itself in the environment the workers inherit, and each worker asks the kernel
for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), and checks that its
parent is still the supervisor (it may have died before the worker asked).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from taskexec import processes

log = logging.getLogger(__name__)

SUPERVISOR_ENV = "TASKEXEC_SUPERVISOR_PID"
# Where prctl is missing, how often a worker looks for its parent instead.
POLL_SECONDS = 1.0


def mark_supervisor() -> None:
    """Called by the supervisor before it starts workers: they inherit its pid."""
    os.environ[SUPERVISOR_ENV] = str(os.getpid())


def die_with_supervisor() -> None:
    """Called in a worker: SIGTERM (uvicorn's graceful shutdown) when the supervisor is
    gone. Does nothing in a process no supervisor started (tests, ``standalone``)."""
    raw = os.environ.get(SUPERVISOR_ENV)
    if not raw or int(raw) == os.getpid():
        return
    supervisor = int(raw)
    if not processes.signal_on_parent_death(signal.SIGTERM):
        threading.Thread(target=_watch, args=(supervisor,), daemon=True).start()
    if os.getppid() != supervisor:
        log.warning("the supervisor (pid %d) is gone: this worker stops", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)


def _watch(supervisor: int) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_SECONDS):
        if os.getppid() != supervisor:
            os.kill(os.getpid(), signal.SIGTERM)
            return
