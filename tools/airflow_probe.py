"""Probe a running Airflow 3 Execution API for the rows of the README's differences
table (run with Airflow's Python, beside its config: it mints short-lived tokens with
Airflow's own JWT generator). Uses three queued task instances from a targets file made
by ``tools/airflow_race_targets.py``; prints one line per check.

    AIRFLOW_HOME=... airflow-venv/bin/python tools/airflow_probe.py \
        http://127.0.0.1:28080 targets.txt
"""

from __future__ import annotations

import sys

import httpx


def _generator(valid_for: int):  # type: ignore[no-untyped-def]
    from airflow.api_fastapi.auth.tokens import JWTGenerator, get_signing_args
    from airflow.configuration import conf

    return JWTGenerator(
        valid_for=valid_for,
        audience=conf.get_mandatory_list_value("execution_api", "jwt_audience")[0],
        issuer=conf.get("api_auth", "jwt_issuer", fallback=None),
        **get_signing_args(make_secret_key_if_needed=False),
    )


def _nested(depth: int) -> str:
    """A body whose containers (its own object included) nest ``depth`` deep."""
    return '{"f":' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


def main() -> None:
    base, targets_file = sys.argv[1], sys.argv[2]
    with open(targets_file) as listed:
        tis = [line.split()[0] for line in listed if line.strip()][:3]
    # A lifetime under 30 s: Airflow refreshes such a token on every answer it sends.
    short = _generator(20)
    client = httpx.Client(base_url=base.rstrip("/") + "/execution", timeout=60)
    checks: list[tuple[str, httpx.Response]] = []

    def call(label: str, method: str, ti: str, action: str, **kw: object) -> httpx.Response:
        token = short.generate(extras={"sub": ti})
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}  # type: ignore[dict-item]
        resp = client.request(method, f"/task-instances/{ti}/{action}", headers=headers, **kw)  # type: ignore[arg-type]
        checks.append((label, resp))
        return resp

    ended, queued, deep = tis
    running = {"state": "running", "hostname": "probe", "unixname": "probe", "pid": 1,
               "start_date": "2026-01-01T00:00:00Z"}  # fmt: skip
    success = {"state": "success", "end_date": "2026-01-01T00:01:00Z"}
    call("PUT rtif, queued try", "PUT", ended, "rtif", json={"bash_command": "first"})
    call("PATCH run", "PATCH", ended, "run", json=running)
    call("PATCH state success (ends the try)", "PATCH", ended, "state", json=success)
    call("PATCH state success again", "PATCH", ended, "state", json=success)
    call("PUT rtif after the try ended", "PUT", ended, "rtif", json={"bash_command": "late"})
    call("PUT heartbeat, not running", "PUT", queued, "heartbeat", json={"hostname": "h", "pid": 1})
    call("GET rtif", "GET", queued, "rtif")
    call("PUT rtif text/plain", "PUT", queued, "rtif", content="x",
         headers={"content-type": "text/plain"})  # fmt: skip
    for label, resp in checks:
        refreshed = "Refreshed-API-Token" in resp.headers
        print(f"{label:40} {resp.status_code}  refreshed token: {refreshed}  {resp.text[:90]}")
    lo, hi = 1, 2000
    last = None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        resp = call("nesting", "PUT", deep, "rtif", content=_nested(mid),
                    headers={"content-type": "application/json"})  # fmt: skip
        if resp.status_code == 201:
            lo = mid
        else:
            hi, last = mid - 1, (resp.status_code, resp.text[:90])
    print(f"{'deepest body accepted (containers)':40} {lo}; one more: {last}")


if __name__ == "__main__":
    main()
