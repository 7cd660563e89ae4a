"""Run inside a virtualenv with ``apache-airflow-task-sdk`` (never imported by the test
process): drives taskexec's Execution API through Airflow's own client and prints what
happened, as JSON, on stdout. Arguments: the Execution API URL and a JSON file of task
instances (``[{"id", "token"}, ...]``: ok, retry, fail)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import UTC, datetime

from airflow.sdk.api.client import Client, ServerResponseError


def _status(call) -> object:
    try:
        result = call()
    except ServerResponseError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        return {"status": exc.response.status_code, "reason": detail.get("reason")}
    return {"ok": True, "result": type(result).__name__}


def main() -> None:
    url, tis_file = sys.argv[1], sys.argv[2]
    with open(tis_file) as listed:
        ok, retry, fail = json.load(listed)
    now = datetime.now(UTC)
    out: dict[str, object] = {}

    client = Client(base_url=url, token=ok["token"])
    ti = uuid.UUID(ok["id"])
    context = client.task_instances.start(ti, os.getpid(), now)
    out["context"] = {
        "dag_id": context.dag_run.dag_id,
        "run_id": context.dag_run.run_id,
        "try_number": getattr(context, "try_number", None),
        "max_tries": context.max_tries,
        "should_retry": context.should_retry,
    }
    out["heartbeat"] = _status(lambda: client.task_instances.heartbeat(ti, os.getpid()))
    out["set_rtif"] = _status(lambda: client.task_instances.set_rtif(ti, {"sql": "SELECT 1"}))
    out["succeed"] = _status(
        lambda: client.task_instances.succeed(
            ti, now, task_outlets=[], outlet_events=[], rendered_map_index=None
        )
    )
    out["start_again"] = _status(lambda: client.task_instances.start(ti, os.getpid(), now))
    out["rtif_after_end"] = _status(lambda: client.task_instances.set_rtif(ti, {"sql": "late"}))

    client = Client(base_url=url, token=retry["token"])
    ti = uuid.UUID(retry["id"])
    client.task_instances.start(ti, os.getpid(), now)
    out["retry"] = _status(
        lambda: client.task_instances.retry(ti, end_date=now, rendered_map_index=None)
    )
    out["stale_heartbeat"] = _status(lambda: client.task_instances.heartbeat(ti, os.getpid()))
    out["stale_rtif"] = _status(lambda: client.task_instances.set_rtif(ti, {"x": "y"}))

    client = Client(base_url=url, token=fail["token"])
    ti = uuid.UUID(fail["id"])
    client.task_instances.start(ti, os.getpid(), now)
    out["fail"] = _status(lambda: client.task_instances.finish(ti, "failed", now, None))

    client = Client(base_url=url, token=ok["token"])
    out["other_ti"] = _status(lambda: client.task_instances.heartbeat(uuid.UUID(fail["id"]), 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
