"""Authoring: ``Dag``, ``BaseTask`` and the built-in ``BashTask`` and ``PythonTask``.

Dag files are Python modules in the dags folder; ``load_dags`` imports them and
collects every ``Dag`` they define.
"""

from __future__ import annotations

import contextvars
import importlib.util
import inspect
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

log = logging.getLogger(__name__)

RENDERERS = frozenset({"bash", "sql", "json", "yaml", "py", "text"})

_current_dag: contextvars.ContextVar[Dag | None] = contextvars.ContextVar(
    "current_dag", default=None
)
# Every Dag created while a dag file is being imported, so that `with Dag(...):`
# without `as name` is found too.
_created: list[Dag] = []


class TaskFailedError(Exception):
    """Raised by a task to fail its try with a message."""


class Dag:
    """A named collection of tasks. Use as a context manager to add tasks to it."""

    def __init__(self, dag_id: str, *, params: Mapping[str, Any] | None = None) -> None:
        self.dag_id = dag_id
        self.params: dict[str, Any] = dict(params or {})
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
        renderers: Mapping[str, str] | None = None,
        dag: Dag | None = None,
    ) -> None:
        self.task_id = task_id
        self.retries = retries
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

    def execute(self, context: dict[str, Any], output: IO[str]) -> Any:
        """Do the work; raise to fail. ``output`` is this try's log file."""
        raise NotImplementedError


class BashTask(BaseTask):
    """Runs a templated bash command; a non-zero exit status fails the try."""

    template_fields: ClassVar[Sequence[str]] = ("bash_command", "env")
    template_fields_renderers: ClassVar[Mapping[str, str]] = {"bash_command": "bash", "env": "json"}

    def __init__(
        self,
        task_id: str,
        *,
        bash_command: str,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.bash_command = bash_command
        self.env = dict(env) if env is not None else None

    def execute(self, context: dict[str, Any], output: IO[str]) -> int:
        """Run the command with ``env`` added to the worker's environment."""
        output.flush()
        env = {**os.environ, **(self.env or {})}
        proc = subprocess.run(
            ["bash", "-c", self.bash_command],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise TaskFailedError(f"bash command exited with status {proc.returncode}")
        return proc.returncode


class PythonTask(BaseTask):
    """Calls ``python_callable(*op_args, **op_kwargs)``. The callable also gets
    ``context=`` and ``templates_dict=`` when its signature names them."""

    template_fields: ClassVar[Sequence[str]] = ("op_args", "op_kwargs", "templates_dict")
    template_fields_renderers: ClassVar[Mapping[str, str]] = {
        "op_args": "json",
        "op_kwargs": "json",
        "templates_dict": "json",
    }

    def __init__(
        self,
        task_id: str,
        *,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = dict(templates_dict) if templates_dict is not None else None

    def execute(self, context: dict[str, Any], output: IO[str]) -> Any:
        """Call the callable with the rendered arguments."""
        params = inspect.signature(self.python_callable).parameters
        extra: dict[str, Any] = {}
        if "context" in params:
            extra["context"] = context
        if "templates_dict" in params:
            extra["templates_dict"] = self.templates_dict
        return self.python_callable(*self.op_args, **self.op_kwargs, **extra)


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


def load_dags(folder: Path) -> dict[str, Dag]:
    """Import every ``*.py`` in ``folder`` (not starting with ``_``) and collect its dags.

    A file that fails to import is logged and skipped; the other dags still load.
    """
    dags: dict[str, Dag] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = f"taskexec_dags_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _created.clear()
        try:
            spec.loader.exec_module(module)
        except Exception:
            log.exception("could not load dag file %s", path)
            sys.modules.pop(name, None)
            continue
        finally:
            found, _created[:] = list(_created), []
        for dag in found:
            dags[dag.dag_id] = dag
    return dags
