"""Overlapping tries: a zombie try 1 writes after try 2 has started. It gets 410, try 2's
fields stay, and try 2 succeeds."""

from __future__ import annotations

import sqlalchemy as sa

from taskexec.config import Settings
from taskexec.sdk.client import Client, ServerResponseError
from taskexec.security import TokenSigner

from conftest import LiveServer
from helpers import rtif_rows, seed, ti_row


def test_zombie_try_cannot_overwrite_the_next_try(
    live_server: LiveServer, settings: Settings, sync_engine: sa.Engine
) -> None:
    ti = seed(settings, max_tries=1).task_instances[0]
    with Client(live_server.base_url, ti.token) as try1:
        try1.task_instances.start(ti.id, hostname="host-a", pid=1)
        try1.task_instances.set_rtif(ti.id, {"cmd": "try 1"})
        # Try 1 is given up on (it reported up_for_retry); its worker lives on as a zombie.
        try1.task_instances.finish(ti.id, "up_for_retry")
        new = ti_row(sync_engine, task_id=ti.task_id)
        assert new is not None and new["try_number"] == 2
        with Client(live_server.base_url, TokenSigner(settings).mint(new["id"])) as try2:
            ctx = try2.task_instances.start(new["id"], hostname="host-b", pid=2)
            assert ctx["try_number"] == 2
            try2.task_instances.set_rtif(new["id"], {"cmd": "try 2"})
            # The zombie wakes up and writes its fields again.
            try:
                try1.task_instances.set_rtif(ti.id, {"cmd": "zombie"})
            except ServerResponseError as exc:
                assert (exc.status, exc.reason) == (410, "stale_try")
            else:
                raise AssertionError("the zombie's write was accepted")
            assert try2.task_instances.finish(new["id"], "success") == 204
            assert try2.task_instances.get_rtif(new["id"])["rendered_fields"] == {"cmd": "try 2"}
    rows = rtif_rows(sync_engine)
    assert [(r["rendered_fields"], r["try_number"]) for r in rows] == [({"cmd": "try 2"}, 2)]
    final = ti_row(sync_engine, id=new["id"])
    assert final is not None and final["state"] == "success"
