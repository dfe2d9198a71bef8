"""``ajc info`` and ``ajc queues``, through the installed entry point, against a real nats-server (and Go's ajc)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

import asyncjobs
from asyncjobs.server import NatsServer
from tests.cli.conftest import RunAjc

UPSTREAM_QUEUE_KEYS = (
    "Entries",
    "Memory Based",
    "Replicas",
    "Archive Period",
    "Max Task Tries",
    "Max Run Time",
    "Max Concurrent",
    "Max Entries",
)


def block(text: str, keys: tuple[str, ...] = UPSTREAM_QUEUE_KEYS) -> dict[str, str]:
    """The ``key: value`` rows of a view, for the keys asked for."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Z][A-Za-z ]+): (.*)$", line)
        if match and match.group(1) in keys and match.group(1) not in rows:
            rows[match.group(1)] = match.group(2).rstrip()
    return rows


def table_rows(text: str) -> list[list[str]]:
    """The cells of a boxed table's rows (header included), without the title."""
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│") and line.count("│") > 2
    ]
    return rows


async def test_queues_new_stores_every_flag_and_shows_the_queue(run_ajc: RunAjc, nats_url: str) -> None:
    done = await run_ajc(
        "queues", "new", "EMAIL", "--age", "2h", "--entries", "500", "--tries", "5", "--run-time", "10m",
        "--concurrent", "20", "--discard-old",
    )  # fmt: skip
    assert done.code == 0, done.err
    assert done.out.splitlines()[0] == "EMAIL Work Queue:"
    assert block(done.out) == {
        "Entries": "0 @ 0 B",
        "Memory Based": "false",
        "Replicas": "1",
        "Archive Period": "2h0m0s",
        "Max Task Tries": "5",
        "Max Run Time": "10m0s",
        "Max Concurrent": "20",
        "Max Entries": "500",
    }
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        queue = (await client.admin.queue_info("EMAIL")).queue
    assert (queue.max_age, queue.max_entries, queue.max_tries, queue.max_run_time) == (7200, 500, 5, 600)
    assert (queue.max_concurrent, queue.discard_old) == (20, True)


async def test_queues_new_defaults_are_upstreams(run_ajc: RunAjc, nats_url: str) -> None:
    done = await run_ajc("q", "add", "BULK", "--json")
    assert done.code == 0, done.err
    stored = done.json()
    assert isinstance(stored, dict)
    assert (stored["max_run_time"], stored["max_tries"], stored["max_concurrent"]) == (3600, -1, 100)
    assert (stored["max_age"], stored["max_entries"], stored["memory"], stored["replicas"]) == (None, None, False, 1)


async def test_queues_list_info_and_json(run_ajc: RunAjc, nats_url: str) -> None:
    assert (await run_ajc("queues", "list")).out.strip() == "No Work Queues defined"
    async with await asyncjobs.connect(nats_url, queue=asyncjobs.Queue("EMAIL", max_tries=3)) as client:
        await client.enqueue(asyncjobs.Task("email:new", {"to": "a"}))
    listed = await run_ajc("queues", "ls")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0].startswith("╭") and "Work Queues" in lines[1]
    rows = table_rows(listed.out)
    assert rows[0] == ["Name", "Items", "Size", "Replicas", "Max Tries", "Max Items", "Max Concurrent"]
    assert rows[1][:2] == ["EMAIL", "1"] and rows[1][3:] == ["1", "3", "unlimited", "100"]
    as_json = await run_ajc("queues", "list", "--json")
    queues = as_json.json()
    assert isinstance(queues, list) and [q["name"] for q in queues] == ["EMAIL"]
    assert (queues[0]["items"], queues[0]["waiting"], queues[0]["max_tries"]) == (1, 1, 3)
    shown = await run_ajc("queues", "info", "EMAIL")
    assert block(shown.out, ("Entries", "Waiting", "First Item"))["Waiting"] == "1"
    assert re.search(r"First Item: \d\d \w{3} \d\d \d\d:\d\d:\d\d UTC \(\d", shown.out)


async def test_queues_configure_changes_the_queue_in_place(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, queue=asyncjobs.Queue("EMAIL", max_tries=3)) as client:
        await client.enqueue(asyncjobs.Task("email:new", None))
    done = await run_ajc("queues", "cfg", "EMAIL", "--tries", "7", "--run-time", "90s", "--concurrent", "5")
    assert done.code == 0, done.err
    assert block(done.out)["Max Task Tries"] == "7" and block(done.out)["Max Run Time"] == "1m30s"
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        info = await client.admin.queue_info("EMAIL")
    assert (info.queue.max_tries, info.queue.max_run_time, info.queue.max_concurrent, info.items) == (7, 90, 5, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("queues", "configure", "EMAIL"), "nothing to change"),
        (("queues", "configure", "EMAIL", "--run-time", "soon"), "invalid duration 'soon'"),
        (("queues", "new", "X", "--tries", "0"), "--tries must be -1"),
        (("queues", "new", "X", "--replicas", "9"), "9 is not in the range 1<=x<=5"),
        (("queues", "new", "bad name"), "queue name"),
    ],
)
async def test_bad_arguments_exit_2_with_one_line(run_ajc: RunAjc, args: tuple[str, ...], message: str) -> None:
    done = await run_ajc(*args)
    assert done.code == 2, (done.out, done.err)
    assert message in done.err
    assert "Traceback" not in done.err


@pytest.mark.parametrize("command", ["info", "purge", "delete", "configure"])
async def test_missing_queue_says_how_to_create_it(run_ajc: RunAjc, command: str) -> None:
    args = ["queues", command, "NOPE", "-f"] if command in ("purge", "delete") else ["queues", command, "NOPE"]
    if command == "configure":
        args += ["--tries", "3"]
    done = await run_ajc(*args)
    assert done.code == 1
    assert done.err.strip() == (
        "ajc: error: queue 'NOPE' does not exist: create it with `ajc queues new NOPE` (or asyncjobs.Queue('NOPE') in "
        "code), or check the name with `ajc queues list`"
    )


@pytest.mark.parametrize("command", ["purge", "delete"])
async def test_purge_and_delete_ask_first_and_need_f_without_a_terminal(
    run_ajc: RunAjc, nats_url: str, command: str
) -> None:
    async with await asyncjobs.connect(nats_url, queue="EMAIL") as client:
        await client.enqueue(asyncjobs.Task("email:new", None))
    refused = await run_ajc("queues", command, "EMAIL")
    assert refused.code == 2
    assert "not confirmed (no terminal to ask on): pass -f" in refused.err
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        assert (await client.admin.queue_info("EMAIL")).items == 1
    done = await run_ajc("queues", command, "EMAIL", "-f")
    assert done.code == 0, done.err
    assert done.out.strip() == f"Queue EMAIL was {'purged' if command == 'purge' else 'removed'}"
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        if command == "purge":
            assert (await client.admin.queue_info("EMAIL")).items == 0
        else:
            assert await client.admin.queue_names() == []


async def test_info_sets_up_storage_and_shows_every_store(run_ajc: RunAjc, nats_url: str) -> None:
    done = await run_ajc("info", "--retention", "1h", "-R", "1")
    assert done.code == 0, done.err
    headings = [line for line in done.out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["Tasks Storage:", "Configuration Storage:", "Leader Elections:", "DEFAULT Work Queue:"]
    assert block(done.out, ("Archive Period",))["Archive Period"] == "1h0m0s"
    as_json = await run_ajc("info", "--json")
    data = as_json.json()
    assert isinstance(data, dict)
    assert (data["tasks"]["retention"], data["tasks"]["tasks"]) == (3600, 0)
    assert [q["name"] for q in data["queues"]] == ["DEFAULT"]


async def test_info_names_election_leaders(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        kv = await client.admin.ensure_bucket("CHORIA_AJ_ELECTIONS", ttl=10)
        await kv.put("task_scheduler", b"host-a-123")
    done = await run_ajc("info")
    assert "task_scheduler: host-a-123" in done.out
    assert orjson.loads((await run_ajc("info", "-j")).out)["elections"]["leaders"] == {"task_scheduler": "host-a-123"}


async def test_connection_flags_work_before_and_after_the_command(run_ajc: RunAjc, nats_url: str) -> None:
    env = {"XDG_CONFIG_HOME": "/nonexistent"}  # no AJC context: only the flags say where the server is
    before = await run_ajc("--server", nats_url, "queues", "list", env=env)
    after = await run_ajc("queues", "list", "-s", nats_url, env=env)
    from_env = await run_ajc("queues", "list", env={**env, "NATS_URL": nats_url})
    assert (before.code, after.code, from_env.code) == (0, 0, 0), (before.err, after.err, from_env.err)


async def test_unreachable_server_is_one_line_and_exit_1(run_ajc: RunAjc) -> None:
    done = await run_ajc("--server", "nats://127.0.0.1:1", "info")
    assert done.code == 1
    assert done.err.strip().startswith("ajc: error: cannot connect to NATS at nats://127.0.0.1:1: connection refused")
    assert len(done.err.strip().splitlines()) == 1


async def test_missing_context_is_one_line(run_ajc: RunAjc) -> None:
    done = await run_ajc("--context", "NOPE", "queues", "list")
    assert done.code == 2
    assert done.err.strip().startswith("ajc: error: NATS context 'NOPE' not found at ")
    assert len(done.err.strip().splitlines()) == 1


async def test_server_without_jetstream_is_one_line(run_ajc: RunAjc, tmp_path: Path) -> None:
    async with NatsServer(jetstream=False, store_dir=tmp_path / "store") as server:
        done = await run_ajc("--server", server.url, "info")
    assert done.code == 1
    assert "JetStream is not enabled" in done.err
    assert len(done.err.strip().splitlines()) == 1


# ---- beside upstream's ajc ------------------------------------------------------------------------------------------


async def test_queues_made_by_either_cli_look_the_same_in_both(run_ajc: RunAjc, run_go_ajc: RunAjc) -> None:
    args = ("--age", "3h", "--entries", "50", "--tries", "4", "--run-time", "5m", "--concurrent", "7")
    go_made = await run_go_ajc("queues", "new", "GOQ", *args)
    ours_made = await run_ajc("queues", "new", "PYQ", *args)
    assert (go_made.code, ours_made.code) == (0, 0), (go_made.err, ours_made.err)
    assert block(go_made.out) == block(ours_made.out)
    for name in ("GOQ", "PYQ"):
        go_view, our_view = await run_go_ajc("queues", "info", name), await run_ajc("queues", "info", name)
        assert block(go_view.out) == block(our_view.out), name
        assert go_view.out.splitlines()[0] == our_view.out.splitlines()[0] == f"{name} Work Queue:"
    go_list, our_list = await run_go_ajc("queues", "ls"), await run_ajc("queues", "ls")
    assert table_rows(go_list.out) == table_rows(our_list.out)


async def test_queues_configure_and_purge_accept_upstreams_arguments(run_ajc: RunAjc, run_go_ajc: RunAjc) -> None:
    assert (await run_go_ajc("queues", "new", "SHARED", "--tries", "3")).code == 0
    ours = await run_ajc("queues", "configure", "SHARED", "--tries", "6", "--run-time", "2m")
    assert ours.code == 0, ours.err
    go_view = await run_go_ajc("queues", "info", "SHARED")
    assert block(go_view.out)["Max Task Tries"] == "6" and block(go_view.out)["Max Run Time"] == "2m0s"
    go_cfg = await run_go_ajc("queues", "configure", "SHARED", "--concurrent", "9")
    assert go_cfg.code == 0, go_cfg.err
    assert block((await run_ajc("queues", "info", "SHARED")).out)["Max Concurrent"] == "9"
    assert (await run_ajc("queues", "purge", "SHARED", "-f")).code == 0
    assert (await run_go_ajc("queues", "rm", "SHARED", "-f")).code == 0
    assert (await run_ajc("queues", "info", "SHARED")).code == 1


async def test_info_shows_what_upstreams_shows(run_ajc: RunAjc, run_go_ajc: RunAjc) -> None:
    go_info = await run_go_ajc("info")
    ours = await run_ajc("info")
    assert (go_info.code, ours.code) == (0, 0), (go_info.err, ours.err)
    store_keys = ("Entries", "Memory Based", "Replicas", "Archive Period")
    go_sections = re.split(r"\n(?=\S)", go_info.out.strip())
    our_sections = re.split(r"\n(?=\S)", ours.out.strip())
    go_titles = [s.splitlines()[0].strip() for s in go_sections]
    our_titles = [s.splitlines()[0].strip() for s in our_sections]
    assert go_titles == our_titles
    for go_section, our_section in zip(go_sections, our_sections, strict=True):
        assert block(go_section, store_keys) == block(our_section, store_keys)
    go_queue, our_queue = go_sections[-1], our_sections[-1]
    assert block(go_queue) == block(our_queue)
