"""Reading a raced task instance's stored value back from a remote server, for
``taskexec race --against``: through the Execution API's own ``GET …/rtif`` (taskexec
serves it; Airflow does not), or through Airflow's public REST API, which serves a task
instance's rendered fields by its key (dag, run, task, map index)."""

from __future__ import annotations

import dataclasses
import urllib.parse

import httpx

from taskexec.race import databases, harness

KINDS = ("execution", "airflow")


class NotServed(Exception):
    """The server offers no such read-back (its answer says the route does not exist)."""


@dataclasses.dataclass(frozen=True)
class Readback:
    """Where to read the stored value back from."""

    kind: str = "execution"
    # The public API's base URL (airflow); None: the raced server's.
    url: str | None = None
    # A Bearer token for the public API (airflow); None: no Authorization header.
    token: str | None = None

    def describe(self) -> str:
        """How the values were checked, for the report."""
        if self.kind == "airflow":
            return "checked through Airflow's REST API (GET /api/v2/…/taskInstances/…)"
        return "checked through GET /execution/task-instances/{id}/rtif"

    def value(self, client: httpx.Client, target: harness.Target) -> str | None:
        """The ``bash_command`` stored for ``target`` (None: nothing stored). Raises
        ``NotServed`` when the server has no such route."""
        if self.kind == "airflow":
            return self._airflow(client, target)
        resp = client.get(
            f"/execution/task-instances/{target.id}/rtif",
            headers={"Authorization": f"Bearer {target.token}"},
        )
        if _not_served(resp):
            raise NotServed
        return _bash_command(resp.json()) if resp.is_success else None

    def _airflow(self, client: httpx.Client, target: harness.Target) -> str | None:
        if target.key is None:
            raise databases.OptionError(
                "--readback airflow needs targets of six columns: "
                "'task_instance_id token dag_id run_id task_id map_index'"
            )
        dag_id, run_id, task_id, map_index = target.key
        dag, run, task = (urllib.parse.quote(part, safe="") for part in (dag_id, run_id, task_id))
        url = f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}"
        if map_index >= 0:
            url += f"/{map_index}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        base = (self.url or str(client.base_url)).rstrip("/")
        resp = client.get(base + url, headers=headers)
        if resp.status_code in (401, 403):
            raise databases.OptionError(
                f"Airflow's REST API refused the read-back ({resp.status_code}): "
                "give a token with --readback-token"
            )
        if _not_served(resp):
            raise NotServed
        return _bash_command(resp.json()) if resp.is_success else None


def _bash_command(body: object) -> str | None:
    fields = body.get("rendered_fields") if isinstance(body, dict) else None
    value = fields.get("bash_command") if isinstance(fields, dict) else None
    return value if isinstance(value, str) else None


def _not_served(resp: httpx.Response) -> bool:
    """Whether the route does not exist (405, or a 404 that is not an answer about the
    task instance), as opposed to an answer that nothing is stored."""
    if resp.status_code == 405:
        return True
    if resp.status_code != 404:
        return False
    try:
        detail = resp.json().get("detail")
    except ValueError:
        return True
    # taskexec's "nothing stored yet" has a reason; Airflow's "no such task instance"
    # is a sentence. A bare "Not Found" is the framework's: no such route.
    if isinstance(detail, dict):
        return detail.get("reason") != "not_found"
    return detail in (None, "Not Found")
