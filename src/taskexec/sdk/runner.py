"""The task runner: /run → render → set_rtif → execute (heartbeating) → /state.

It runs one try of one task instance. A 410 at any step means a newer try has
replaced this one: the runner stops quietly and leaves the new try alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from taskexec.sdk import rendering
from taskexec.sdk.client import Client, RetryPolicy, ServerResponseError
from taskexec.sdk.dag import BaseTask, Dag
from taskexec.wire import protocol

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    """What the runner needs to know besides the task instance."""

    api_url: str
    logs_dir: Path
    timeout: float = 5.0
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    max_templated_field_length: int = 4096
    heartbeat_interval: float = 5.0
    # Names to hide besides Airflow's sensitive words (lower case).
    sensitive_words: tuple[str, ...] = ()


@dataclasses.dataclass
class RunResult:
    """How one try ended, from this runner's point of view."""

    outcome: str  # success | failed | up_for_retry | stale | stopped | not_started
    message: str = ""


# Sent by the heartbeat thread to this process to stop the task in the main thread.
STOP_SIGNAL = signal.SIGUSR1


class TaskStopped(BaseException):
    """Raised in the task when the server ended its try: not an Exception, so that a
    task's ``except Exception`` cannot swallow it."""


def _raise_stopped(_signum: int, _frame: object) -> None:
    raise TaskStopped()


def _stop_on_signal() -> Callable[[], object] | None:
    """Make ``STOP_SIGNAL`` raise ``TaskStopped`` in the main thread, where the task
    runs; returns how to undo it, or None off the main thread (signals go there only)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(STOP_SIGNAL)
    signal.signal(STOP_SIGNAL, _raise_stopped)
    return lambda: signal.signal(STOP_SIGNAL, previous if previous is not None else signal.SIG_DFL)


class _Heartbeat(threading.Thread):
    """Heartbeats while the task executes. When the server says this try is over (409:
    it was failed, cancelled or timed out; 410: a newer try replaced it), it stops the
    task: it interrupts the main thread, where the task runs (a bash command's process
    is killed with it)."""

    def __init__(self, client: Client, ti_id: uuid.UUID, interval: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{ti_id}")
        self.client, self.ti_id, self.interval = client, ti_id, interval
        self.stopped = threading.Event()
        self.stop_reason: str | None = None
        self._executing = True
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.client.task_instances.heartbeat(
                    self.ti_id, hostname=socket.gethostname(), pid=os.getpid()
                )
            except ServerResponseError as exc:
                if exc.status in (409, 410):
                    self._stop_the_task(exc.reason)
                    return
                log.warning("heartbeat failed: %s", exc)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _stop_the_task(self, reason: str) -> None:
        with self._lock:
            self.stop_reason = reason
            if self._executing:
                # A real signal, not _thread.interrupt_main(): it also ends a blocking
                # call in the main thread (waiting for a bash command, a sleep).
                os.kill(os.getpid(), STOP_SIGNAL)

    def done_executing(self) -> None:
        """The task returned: no interrupt may come after this."""
        with self._lock:
            self._executing = False


def run_task_instance(
    ti_id: uuid.UUID,
    token: str,
    dags: Mapping[str, Dag],
    config: RunnerConfig,
    *,
    http: httpx.Client | None = None,
) -> RunResult:
    """Run one try of a task instance end to end (``http``: e.g. an in-process client)."""
    with Client(
        config.api_url, token, timeout=config.timeout, retry=config.retry, http=http
    ) as client:
        return _run(client, ti_id, dags, config)


def _run(
    client: Client, ti_id: uuid.UUID, dags: Mapping[str, Dag], config: RunnerConfig
) -> RunResult:
    hostname, pid = socket.gethostname(), os.getpid()
    try:
        ctx = client.task_instances.start(ti_id, hostname=hostname, pid=pid)
    except ServerResponseError as exc:
        if exc.status == 410:
            return RunResult("stale", exc.message)
        if exc.status == 409:
            return RunResult("not_started", f"{exc.reason}: {exc.message}")
        raise
    dag_run = ctx["dag_run"]
    path = protocol.log_path(
        config.logs_dir,
        dag_run["dag_id"],
        dag_run["run_id"],
        ctx["task_id"],
        ctx["map_index"],
        ctx["try_number"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        _say(out, f"try {ctx['try_number']} of {ctx['task_id']}[{ctx['map_index']}] on {hostname}")
        outcome, message = _render_and_execute(client, ti_id, ctx, dags, config, out)
        if outcome == "stale":
            _say(out, f"stopping: a newer try replaced this one ({message})")
            return RunResult("stale", message)
        if outcome == "stopped":
            _say(out, f"stopped: {message}")
            return RunResult("stopped", message)
        _say(out, f"finishing as {outcome}" + (f": {message}" if message else ""))
        try:
            client.task_instances.finish(ti_id, outcome)
        except ServerResponseError as exc:
            if exc.status == 410:
                _say(out, "stopping: a newer try replaced this one")
                return RunResult("stale", exc.message)
            raise
    return RunResult(outcome, message)


def _render_and_execute(
    client: Client,
    ti_id: uuid.UUID,
    ctx: dict[str, Any],
    dags: Mapping[str, Dag],
    config: RunnerConfig,
    out: IO[str],
) -> tuple[str, str]:
    """Returns (outcome, message): the state to report, or "stale" or "stopped" (the
    server replaced or ended the try: nothing more to report)."""
    failed = "up_for_retry" if ctx["should_retry"] else "failed"
    dag = dags.get(ctx["dag_run"]["dag_id"])
    task = dag.tasks.get(ctx["task_id"]) if dag else None
    if task is None:
        message = f"dag {ctx['dag_run']['dag_id']!r} has no task {ctx['task_id']!r} here"
        return "failed", message
    context = rendering.build_context(
        task=task, dag_run=ctx["dag_run"], map_index=ctx["map_index"], try_number=ctx["try_number"]
    )
    try:
        rendered = rendering.render_task(task, context)
    except rendering.RenderError as exc:
        # Retrying cannot fix a template: fail for good, with the reason in the log.
        return "failed", f"template error: {exc}"
    fields = rendering.rendered_fields_payload(
        rendered, rendering.worker_masker(config.sensitive_words), config.max_templated_field_length
    )
    if fields:
        try:
            client.task_instances.set_rtif(
                ti_id,
                fields,
                meta=rendering.rendered_fields_meta(
                    rendered, fields, config.max_templated_field_length
                ),
            )
        except ServerResponseError as exc:
            if exc.status == 410:
                return "stale", exc.message
            if exc.status == 409:
                # The server ended the try (a cancelled run) after it started and before
                # this write: stopped, as on a heartbeat's 409; nothing more to report.
                return "stopped", f"the server ended this try before it ran ({exc.reason})"
            return failed, f"could not store rendered fields: {exc}"
    heartbeat = _Heartbeat(client, ti_id, config.heartbeat_interval)
    return _execute(rendered, context, out, heartbeat, failed)


def _execute(
    task: BaseTask, context: dict[str, Any], out: IO[str], heartbeat: _Heartbeat, failed: str
) -> tuple[str, str]:
    """Run the task while heartbeating; "stopped" or "stale" if the server ended the
    try meanwhile (then the runner reports nothing more). ``failed`` is the state a
    failure reports: up_for_retry while tries are left."""
    restore = _stop_on_signal()
    if restore is None:
        heartbeat.done_executing()  # off the main thread nothing can interrupt the task
    heartbeat.start()
    try:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                task.execute(context, out)
        finally:
            heartbeat.done_executing()
            if restore is not None:
                restore()
    except TaskStopped:
        pass
    except Exception as exc:
        out.write(traceback.format_exc())
        if heartbeat.stop_reason is None:
            return failed, f"{type(exc).__name__}: {exc}"
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
        out.flush()
    if heartbeat.stop_reason == "stale_try":
        return "stale", "the server replaced this try while it ran"
    if heartbeat.stop_reason is not None:
        return "stopped", f"the server ended this try while it ran ({heartbeat.stop_reason})"
    return "success", ""


def _say(out: IO[str], line: str) -> None:
    out.write(f"[taskexec] {line}\n")
    out.flush()
