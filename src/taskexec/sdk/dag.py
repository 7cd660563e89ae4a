"""Authoring: ``Dag``, ``BaseTask``, dependencies (``a >> b``, ``chain``) and loading the
dags folder.

Dag files are Python modules in the dags folder; ``load_dag_files`` imports them and
collects every ``Dag`` they define, refusing a dag whose dependencies form a cycle.
The built-in tasks (``BashTask``, ``PythonTask``) are in ``sdk.operators``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import importlib.util
import itertools
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

from taskexec.wire import schemas

log = logging.getLogger(__name__)

RENDERERS = frozenset({"bash", "sql", "json", "yaml", "py", "text"})
TRIGGER_RULES = schemas.TRIGGER_RULES

# Airflow's defaults.
DEFAULT_RETRY_DELAY = dt.timedelta(seconds=300)
DEFAULT_MAX_ACTIVE_TASKS = 16
DEFAULT_MAX_ACTIVE_RUNS = 16

_current_dag: contextvars.ContextVar[Dag | None] = contextvars.ContextVar(
    "current_dag", default=None
)
# Every Dag created while a dag file is being imported, so that `with Dag(...):`
# without `as name` is found too.
_created: list[Dag] = []

Duration = float | dt.timedelta
T = TypeVar("T", bound="BaseTask | Sequence[BaseTask]")


def _seconds(value: Duration | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class TaskFailedError(Exception):
    """Raised by a task to fail its try with a message."""


class DagCycleError(ValueError):
    """The dependencies of a dag form a cycle."""


class Dag:
    """A named collection of tasks. Use as a context manager to add tasks to it."""

    def __init__(
        self,
        dag_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        dagrun_timeout: Duration | None = None,
        max_active_tasks: int = DEFAULT_MAX_ACTIVE_TASKS,
        max_active_runs: int = DEFAULT_MAX_ACTIVE_RUNS,
    ) -> None:
        self.dag_id = dag_id
        self.params: dict[str, Any] = dict(params or {})
        self.dagrun_timeout = dagrun_timeout
        self.max_active_tasks = max_active_tasks
        self.max_active_runs = max_active_runs
        self.tasks: dict[str, BaseTask] = {}
        self._token: contextvars.Token[Dag | None] | None = None
        _created.append(self)

    def __enter__(self) -> Dag:
        self._token = _current_dag.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current_dag.reset(self._token)
            self._token = None

    def add_task(self, task: BaseTask) -> None:
        """Register ``task``; task ids are unique within a dag."""
        if task.task_id in self.tasks:
            raise ValueError(f"dag {self.dag_id!r} already has a task {task.task_id!r}")
        self.tasks[task.task_id] = task

    def task_instance_keys(self) -> list[tuple[str, int, int]]:
        """``(task_id, map_index, retries)`` for every task instance of one run."""
        keys: list[tuple[str, int, int]] = []
        for task in self.tasks.values():
            if task.expand_items is None:
                keys.append((task.task_id, -1, task.retries))
            else:
                keys.extend((task.task_id, i, task.retries) for i in range(len(task.expand_items)))
        return keys

    def check_acyclic(self) -> None:
        """Raise ``DagCycleError`` naming the tasks of a cycle, if there is one."""
        # Depth-first and iterative; a task met again on the current path closes a cycle.
        done: set[str] = set()
        for start in sorted(self.tasks):
            if start in done:
                continue
            path, on_path = [start], {start}
            stack = [iter(sorted(self.tasks[start].downstream_task_ids))]
            while stack:
                child = next(stack[-1], None)
                if child is None:
                    stack.pop()
                    finished = path.pop()
                    on_path.discard(finished)
                    done.add(finished)
                elif child in on_path:
                    cycle = " >> ".join([*path[path.index(child) :], child])
                    raise DagCycleError(f"dag {self.dag_id!r} has a cycle: {cycle}")
                elif child not in done:
                    path.append(child)
                    on_path.add(child)
                    stack.append(iter(sorted(self.tasks[child].downstream_task_ids)))

    def spec(self) -> schemas.DagSpec:
        """What the scheduler needs to run this dag: each task's upstreams, trigger
        rule, retry policy and timeout, and the run's limits."""
        return schemas.DagSpec(
            tasks={task_id: task.spec() for task_id, task in self.tasks.items()},
            dagrun_timeout=_seconds(self.dagrun_timeout),
            max_active_tasks=self.max_active_tasks,
            max_active_runs=self.max_active_runs,
        )


class BaseTask:
    """A unit of work. Subclasses name their ``template_fields`` and implement ``execute``."""

    template_fields: ClassVar[Sequence[str]] = ()
    # Field name → how to display it: bash, sql, json, yaml, py or text.
    template_fields_renderers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        task_id: str,
        *,
        retries: int = 0,
        retry_delay: Duration = DEFAULT_RETRY_DELAY,
        retry_exponential_backoff: bool | float = False,
        max_retry_delay: Duration | None = None,
        execution_timeout: Duration | None = None,
        trigger_rule: str = "all_success",
        renderers: Mapping[str, str] | None = None,
        dag: Dag | None = None,
    ) -> None:
        if trigger_rule not in TRIGGER_RULES:
            known = ", ".join(sorted(TRIGGER_RULES))
            raise ValueError(f"{task_id}: unknown trigger rule {trigger_rule!r} (use {known})")
        self.task_id = task_id
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_exponential_backoff = retry_exponential_backoff
        self.max_retry_delay = max_retry_delay
        self.execution_timeout = execution_timeout
        self.trigger_rule = trigger_rule
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        self.expand_items: list[Any] | None = None
        # Per-task overrides of the class's renderers, e.g. {"templates_dict": "sql"}.
        self.renderers = {**self.template_fields_renderers, **(renderers or {})}
        for field, renderer in self.renderers.items():
            if renderer not in RENDERERS:
                raise ValueError(f"{field}: unknown renderer {renderer!r}")
        owner = dag or _current_dag.get()
        if owner is None:
            raise ValueError(f"task {task_id!r} is not in a dag: create it inside `with Dag(...)`")
        self.dag = owner
        owner.add_task(self)

    def expand(self, items: Iterable[Any]) -> BaseTask:
        """Map this task over ``items``: one task instance per item, ``map_index`` 0..n-1.
        The item is ``{{ item }}`` in templates."""
        self.expand_items = list(items)
        return self

    def set_downstream(self, other: BaseTask | Sequence[BaseTask]) -> None:
        """Make ``other`` (a task or a list of tasks) run after this one."""
        for task in _tasks(other):
            if task.dag is not self.dag:
                raise ValueError(f"{task.task_id!r} is in another dag than {self.task_id!r}")
            self.downstream_task_ids.add(task.task_id)
            task.upstream_task_ids.add(self.task_id)

    def set_upstream(self, other: BaseTask | Sequence[BaseTask]) -> None:
        """Make this task run after ``other`` (a task or a list of tasks)."""
        for task in _tasks(other):
            task.set_downstream(self)

    def __rshift__(self, other: T) -> T:
        """``self >> other``: other runs after self; returns other, so chains read left
        to right."""
        self.set_downstream(other)
        return other

    def __lshift__(self, other: T) -> T:
        """``self << other``: self runs after other; returns other."""
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Sequence[BaseTask]) -> BaseTask:
        """``[a, b] >> self``."""
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Sequence[BaseTask]) -> BaseTask:
        """``[a, b] << self``."""
        self.set_downstream(other)
        return self

    def spec(self) -> schemas.TaskSpec:
        """This task's part of ``Dag.spec``."""
        backoff = self.retry_exponential_backoff
        return schemas.TaskSpec(
            upstream=sorted(self.upstream_task_ids),
            trigger_rule=self.trigger_rule,  # checked in __init__
            retries=self.retries,
            retry_delay=_seconds(self.retry_delay) or 0.0,
            # Airflow's True doubles the delay each try; a number is the factor itself.
            retry_exponential_backoff=2.0 if backoff is True else max(1.0, float(backoff)),
            max_retry_delay=_seconds(self.max_retry_delay),
            execution_timeout=_seconds(self.execution_timeout),
            map_count=None if self.expand_items is None else len(self.expand_items),
        )

    def execute(self, context: dict[str, Any], output: IO[str]) -> Any:
        """Do the work; raise to fail. ``output`` is this try's log file."""
        raise NotImplementedError


def _tasks(other: BaseTask | Sequence[BaseTask]) -> list[BaseTask]:
    return [other] if isinstance(other, BaseTask) else list(other)


def chain(*steps: BaseTask | Sequence[BaseTask]) -> None:
    """``chain(a, [b, c], d)``: each step runs after the one before it. Two lists side
    by side must be the same length and are joined pairwise, as in Airflow."""
    for before, after in itertools.pairwise(steps):
        if isinstance(before, BaseTask) or isinstance(after, BaseTask):
            if isinstance(before, BaseTask):
                before.set_downstream(after)
            else:
                for task in before:
                    task.set_downstream(after)
            continue
        if len(before) != len(after):
            raise ValueError(
                f"chain: lists of different lengths side by side ({len(before)} and {len(after)})"
            )
        for up, down in zip(before, after, strict=True):
            up.set_downstream(down)


# Every value registered with ``mask_secret`` in this process (dag files call it when
# they are loaded); the runner's masker hides each of them.
_secrets: list[Any] = []


def mask_secret(value: Any) -> None:
    """Register a secret value: it is replaced by ``***`` wherever it appears in
    rendered fields this worker sends."""
    _secrets.append(value)


def registered_secrets() -> tuple[Any, ...]:
    """The values registered with ``mask_secret`` so far."""
    return tuple(_secrets)


def _import_dag_file(path: Path) -> list[Dag]:
    name = f"taskexec_dags_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return []
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _created.clear()
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        found, _created[:] = list(_created), []
    return found


def load_dag_files(folder: Path) -> tuple[dict[str, Dag], dict[str, str]]:
    """Import every ``*.py`` in ``folder`` (not starting with ``_``); returns the dags
    and, per file that could not be loaded, a one-line reason.

    A file that fails to import, or defines a dag with a dependency cycle, is skipped;
    the other dags still load.
    """
    dags: dict[str, Dag] = {}
    problems: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            found = _import_dag_file(path)
            for dag in found:
                dag.check_acyclic()
        except DagCycleError as exc:
            log.error("dag file %s refused: %s", path, exc)
            problems[path.name] = str(exc)
            continue
        except Exception as exc:
            log.exception("could not load dag file %s", path)
            problems[path.name] = f"{type(exc).__name__}: {exc}"
            continue
        for dag in found:
            dags[dag.dag_id] = dag
    return dags, problems


def load_dags(folder: Path) -> dict[str, Dag]:
    """The dags of ``folder`` (see ``load_dag_files``; files that fail are logged)."""
    return load_dag_files(folder)[0]
