"""Rendering templated fields (Jinja, sandboxed, strict) and preparing them for the API:
mask, then serialize and truncate."""

from __future__ import annotations

import copy
import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from taskexec.sdk import dag, serialization
from taskexec.sdk.dag import BaseTask
from taskexec.wire import masking, protocol


class RenderError(Exception):
    """A template could not be rendered (undefined variable, syntax error, ...)."""


@functools.cache
def jinja_env() -> SandboxedEnvironment:
    """The sandboxed environment: templates cannot reach into Python internals, and an
    undefined variable is an error instead of an empty string."""
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def worker_masker(extra_words: Iterable[str] = ()) -> masking.SecretsMasker:
    """The masker of one try: Airflow's sensitive words plus ``extra_words`` (the
    runner's configured ones), and every secret registered with ``mask_secret``."""
    masker = masking.SecretsMasker(extra_words=extra_words)
    masker.add_secret(dag.registered_secrets())
    return masker


def build_context(
    *,
    task: BaseTask,
    dag_run: Mapping[str, Any],
    map_index: int,
    try_number: int,
) -> dict[str, Any]:
    """The template context of one try."""
    logical = dag_run.get("logical_date") or dag_run["run_after"]
    if isinstance(logical, str):
        logical = dt.datetime.fromisoformat(logical)
    conf = dict(dag_run.get("conf") or {})
    item = None
    if task.expand_items is not None and 0 <= map_index < len(task.expand_items):
        item = task.expand_items[map_index]
    return {
        "ds": logical.strftime("%Y-%m-%d"),
        "ds_nodash": logical.strftime("%Y%m%d"),
        "ts": logical.isoformat(),
        "logical_date": logical,
        "run_id": dag_run["run_id"],
        "dag_id": task.dag.dag_id,
        "task_id": task.task_id,
        "map_index": map_index,
        "try_number": try_number,
        # Run conf overrides the dag's default params, as in Airflow.
        "params": {**task.dag.params, **conf},
        "conf": conf,
        "item": item,
    }


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return jinja_env().from_string(value).render(context)
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    if isinstance(value, tuple):
        return tuple(_render(v, context) for v in value)
    return value


def render_task(task: BaseTask, context: dict[str, Any]) -> BaseTask:
    """A copy of ``task`` with every template field rendered (nested ones too)."""
    rendered = copy.copy(task)
    for field in task.template_fields:
        try:
            setattr(rendered, field, _render(getattr(task, field), context))
        except jinja2.TemplateError as exc:
            raise RenderError(f"cannot render field {field!r}: {exc}") from exc
    return rendered


def rendered_fields_payload(
    task: BaseTask, masker: masking.SecretsMasker, max_length: int
) -> dict[str, Any]:
    """The body of ``PUT /rtif``: each template field serialized (so ``str()`` of an
    object is masked too), masked, then truncated (after masking, so a cut can never
    leave half a secret behind)."""
    payload: dict[str, Any] = {}
    for field in task.template_fields:
        value = serialization.serialize_template_field(getattr(task, field))
        masked = masker.redact(value, field)
        payload[field] = serialization.serialize_and_truncate(masked, max_length)
    return payload


def rendered_fields_meta(
    task: BaseTask, payload: Mapping[str, Any], max_length: int
) -> dict[str, Any]:
    """Each sent field's renderer and, where the worker cut it, the length it cut to:
    what the read side needs to highlight a field and mark it truncated."""
    meta: dict[str, Any] = {}
    for field, value in payload.items():
        entry: dict[str, Any] = {}
        if field in task.renderers:
            entry["renderer"] = task.renderers[field]
        if protocol.is_truncated(value):
            entry["truncated_at"] = max_length
        if entry:
            meta[field] = entry
    return meta
