"""docs/security.md: its nats-server configurations are valid, and its recipes run real tasks end to end.

Each ```conf block of the page is a file named on its first line (``# /etc/nats/<name>: ...``). The blocks are
written to a temporary directory with the host paths, certificates, nkey and passwords replaced, checked with
``nats-server -t``, and the recipes are run against servers started from them. Any permissions violation a server
logs fails the test, so the documented permission sets are proven sufficient, not only accepted.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import re
import shlex
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import nats
import nkeys
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import asyncjobs
from asyncjobs import constants
from asyncjobs.constants import CONFIG_BUCKET
from asyncjobs.jsapi import JetStream
from asyncjobs.kv import KeyValue
from asyncjobs.natscontext import NatsContext
from asyncjobs.server import NatsServer, find_nats_server
from asyncjobs.testing import eventually
from tests.core.conftest import FAST_RETRY, running

DOC: Final = Path(__file__).resolve().parents[2] / "docs" / "security.md"
CONF_BLOCK: Final = re.compile(r"^```conf\n(.*?)^```", re.M | re.S)
FILE_HEADER: Final = re.compile(r"# /etc/nats/(?P<name>[\w.-]+\.conf): ")
INCLUDE: Final = re.compile(r"^include \./(?P<name>[\w.-]+\.conf)$", re.M)
PASSWORD_VAR: Final = re.compile(r"\$(AJ_[A-Z_]+_PASSWORD)\b")
DOC_NKEY: Final = re.compile(r'nkey: "(U[A-Z2-7]{55})"')
# The flags of `nats context add` the page uses, and the context key each one sets (natscli writes them so).
CONTEXT_FLAGS: Final = {
    "--server": "url",
    "--user": "user",
    "--password": "password",
    "--creds": "creds",
    "--nkey": "nkey",
    "--tlsca": "ca",
    "--tlscert": "cert",
    "--tlskey": "key",
    "--js-domain": "jetstream_domain",
    "--js-api-prefix": "jetstream_api_prefix",
    "--inbox-prefix": "inbox_prefix",
}


def _conf_blocks() -> dict[str, str]:
    """The page's configuration files by name."""
    blocks: dict[str, str] = {}
    for text in CONF_BLOCK.findall(DOC.read_text()):
        header = FILE_HEADER.match(text)
        assert header, f"a conf block of {DOC.name} does not start with '# /etc/nats/<name>.conf: ':\n{text}"
        assert header["name"] not in blocks, f"{header['name']} appears twice in {DOC.name}"
        blocks[header["name"]] = text
    return blocks


BLOCKS: Final = _conf_blocks()
INCLUDED: Final = {name for text in BLOCKS.values() for name in INCLUDE.findall(text)}
SERVER_CONFIGS: Final = sorted(set(BLOCKS) - INCLUDED)


def _context_commands() -> list[list[str]]:
    """Every `nats context add` command of the page, split as a shell would."""
    return [shlex.split(line) for line in DOC.read_text().splitlines() if line.startswith("nats context add ")]


def _permissions(name: str) -> dict[str, list[str]]:
    """A permission set of permissions.conf: its publish and subscribe subjects."""
    body = re.search(rf"^{name} = \{{\n(.*?)^\}}", BLOCKS["permissions.conf"], re.M | re.S)
    assert body, f"permissions.conf has no {name}"
    lists = dict(re.findall(r"(publish|subscribe): \[(.*?)\]", body[1], re.S))
    return {kind: re.findall(r'"([^"]+)"', lists.get(kind, "")) for kind in ("publish", "subscribe")}


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` the rest."""
    want, have = pattern.split("."), subject.split(".")
    for n, token in enumerate(want):
        if token == ">":
            return len(have) > n
        if n >= len(have) or (token != "*" and token != have[n]):
            return False
    return len(want) == len(have)


def _write_pem(path: Path, obj: Any) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        fmt, enc = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, fmt, enc))
    return path


def _issue(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as the page names them."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asyncjobs test CA")])

    def build(subject: x509.Name, key: Any, issuer_key: Any, *extensions: tuple[Any, bool]) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca = build(ca_name, ca_key, ca_key, (x509.BasicConstraints(ca=True, path_length=None), True))
    _write_pem(directory / "ca.pem", ca)
    for prefix, usage, alt_names in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("worker", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("aj-worker")]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"aj-{prefix}")])
        cert = build(
            subject,
            key,
            ca_key,
            (x509.SubjectAlternativeName(alt_names), False),
            (x509.ExtendedKeyUsage([usage]), False),
        )
        _write_pem(directory / f"{prefix}-cert.pem", cert)
        _write_pem(directory / f"{prefix}-key.pem", key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    _issue(directory)
    return directory


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every password variable the configurations read from nats-server's environment, set to a test value."""
    values = {name: f"pw-{name.lower()}" for text in BLOCKS.values() for name in PASSWORD_VAR.findall(text)}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _materialise(directory: Path, certs: Path, *, replace: dict[str, str] | None = None) -> Path:
    """Write every block into ``directory`` with host paths (and ``replace``) swapped for test ones."""
    directory.mkdir(parents=True, exist_ok=True)
    store = directory / "jetstream"
    for name, text in BLOCKS.items():
        text = text.replace("/var/lib/nats/jetstream", str(store)).replace("/etc/nats/tls", str(certs))
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        (directory / name).write_text(text)
    return directory


def _server(config: Path) -> NatsServer:
    # JetStream and its store come from the file: passing -js -sd as well would duplicate store_dir.
    return NatsServer(jetstream=False, extra_args=["-c", str(config)])


def _violations(*servers: NatsServer) -> list[str]:
    return [line for server in servers for line in server.log_tail if "Violation" in line]


async def _drop_item(client: asyncjobs.Client, task_id: str) -> None:
    """Delete a task's work item behind the client's back, as a crash between the two writes of an enqueue would."""
    stream = constants.QUEUE_STREAM_PREFIX + "EMAIL"
    subject = f"{constants.QUEUE_SUBJECT_PREFIX}EMAIL.{task_id}"
    api = f"{constants.JS_API_PREFIX}.STREAM.MSG"
    found = await client.nc.request(f"{api}.GET.{stream}", orjson.dumps({"last_by_subj": subject}), timeout=2)
    seq = orjson.loads(found.data)["message"]["seq"]
    deleted = await client.nc.request(f"{api}.DELETE.{stream}", orjson.dumps({"seq": seq}), timeout=2)
    assert orjson.loads(deleted.data).get("success"), deleted.data


# ---- the page itself ---------------------------------------------------------------------------------------------


def test_blocks_are_files_that_include_each_other() -> None:
    shown, included = set(BLOCKS), set(INCLUDED)
    assert shown >= {"permissions.conf", "accounts.conf", "server.conf", "nkeys.conf", "tls.conf", "mtls.conf"}
    assert shown >= {"hub.conf", "leaf.conf"}
    assert included <= shown, "an include names a file the page does not show"
    assert included == {"permissions.conf", "accounts.conf", "server.conf"}


@pytest.mark.parametrize("name", SERVER_CONFIGS)
def test_nats_server_accepts_the_config(name: str, tmp_path: Path, certs: Path, passwords: dict[str, str]) -> None:
    config = _materialise(tmp_path, certs) / name
    checked = subprocess.run(
        [find_nats_server(), "-t", "-c", str(config)], capture_output=True, text=True, timeout=30, check=False
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "is valid" in output


def test_the_full_set_covers_every_subject_the_code_uses() -> None:
    full = _permissions("ASYNCJOBS_ALL")
    api, queue_stream = constants.JS_API_PREFIX, constants.QUEUE_STREAM_PREFIX + "EMAIL"
    published = [
        constants.TASK_SUBJECT_PREFIX + "id",
        f"{constants.QUEUE_SUBJECT_PREFIX}EMAIL.id",
        constants.TASK_EVENT_PREFIX + "id",
        constants.LEADER_EVENT_PREFIX + "task_scheduler",
        constants.REQUEST_REPLY_PREFIX + constants.REQUEST_REPLY_CATCHALL,
        f"$KV.{constants.CONFIG_BUCKET}.{constants.QUEUE_PURGED_KEY_PREFIX}EMAIL",
        f"$KV.{constants.CONFIG_BUCKET}.scheduled_tasks.digest",
        f"$KV.{constants.ELECTIONS_BUCKET}.task_scheduler",
        f"{api}.STREAM.INFO.{constants.TASKS_STREAM}",
        f"{api}.CONSUMER.MSG.NEXT.{queue_stream}.{constants.QUEUE_CONSUMER}",
        f"$JS.ACK.{queue_stream}.{constants.QUEUE_CONSUMER}.1.2.3.4.0",
    ]
    subscribed = [
        "_INBOX.abc.1",
        constants.TASK_EVENT_PREFIX + "id",
        f"{constants.MAX_DELIVERIES_ADVISORY}.{queue_stream}.{constants.QUEUE_CONSUMER}",
    ]
    for kind, subjects in (("publish", published), ("subscribe", subscribed)):
        for subject in subjects:
            assert any(_matches(p, subject) for p in full[kind]), f"ASYNCJOBS_ALL does not allow {kind} to {subject}"


def test_context_commands_use_only_fields_the_client_reads() -> None:
    commands = _context_commands()
    assert len(commands) >= 6
    read = set(NatsContext.__dataclass_fields__)
    for command in commands:
        flags = command[4::2]
        assert flags, command
        for flag in flags:
            assert flag in CONTEXT_FLAGS, f"{flag} in {shlex.join(command)}"
            assert CONTEXT_FLAGS[flag] in read, f"the client ignores the context's {CONTEXT_FLAGS[flag]}"


def _context(name: str, substitutions: dict[str, str]) -> dict[str, str]:
    """The context a documented `nats context add <name> ...` command saves, with ``substitutions`` applied."""
    for command in _context_commands():
        if command[3] == name:
            context = {}
            for flag, value in zip(command[4::2], command[5::2], strict=True):
                for old, new in substitutions.items():
                    value = value.replace(old, new)
                context[CONTEXT_FLAGS[flag]] = value
            return context
    raise AssertionError(f"{DOC.name} has no context {name}")


# ---- the recipes, end to end -------------------------------------------------------------------------------------


@pytest.fixture
async def accounts_server(tmp_path: Path, certs: Path, passwords: dict[str, str]) -> AsyncIterator[NatsServer]:
    async with _server(_materialise(tmp_path / "conf", certs) / "server.conf") as server:
        yield server


async def _render(task: asyncjobs.Task) -> bytes:
    return b"<p>welcome</p>"


async def test_permission_sets_run_tasks_end_to_end(accounts_server: NatsServer, passwords: dict[str, str]) -> None:
    url, email = accounts_server.url, asyncjobs.Queue("EMAIL", no_create=True)
    admin = await asyncjobs.connect(
        url, user="aj-admin", password=passwords["AJ_ADMIN_PASSWORD"], queue="EMAIL", persist_events=True
    )
    service = await nats.connect(url, user="aj-render", password=passwords["AJ_RENDER_PASSWORD"])
    clients = [admin]
    try:
        await asyncjobs.serve_remote_handler(service, "email:render", _render)
        producer = await asyncjobs.connect(
            url, user="aj-producer", password=passwords["AJ_PRODUCER_PASSWORD"], queue=email
        )
        clients.append(producer)
        worker = await asyncjobs.connect(
            url,
            user="aj-worker",
            password=passwords["AJ_WORKER_PASSWORD"],
            queue=email,
            discard=["terminated"],
            retry_policy=FAST_RETRY,
            reconcile_interval=0.2,
            reconcile_grace=0.5,
            shutdown_grace=1.0,
        )
        clients.append(worker)
        router = asyncjobs.Router()

        @router.handler("email:new")
        async def send(task: asyncjobs.Task) -> str:
            await task.mark_in_progress()
            return "sent"

        @router.handler("email:bounce")
        async def bounce(task: asyncjobs.Task) -> None:
            raise asyncjobs.TerminateTask("mailbox unknown")

        router.remote("email:render")
        sent, rendered, bounced, lost = await producer.enqueue_many(
            [
                asyncjobs.Task("email:new", {"to": "ada"}),
                asyncjobs.Task("email:render"),
                asyncjobs.Task("email:bounce"),
                asyncjobs.Task("email:new", {"to": "bob"}),
            ]
        )
        await producer.enqueue(sent)  # a repeated enqueue finds the item already queued: nothing changes
        await _drop_item(admin, lost.id)  # for the worker's reconciler to find and replace
        async with admin.events(bounced.id) as events, running(worker, router):
            assert (await producer.wait(sent.id, timeout=10)).state == asyncjobs.TaskState.COMPLETED
            done = await producer.wait(rendered.id, timeout=10)
            assert done.result is not None and base64.b64decode(done.result.payload) == b"<p>welcome</p>"
            async with asyncio.timeout(10):
                async for event in events:
                    if event.state == asyncjobs.TaskState.TERMINATED:
                        break
            assert (await producer.wait(lost.id, timeout=10)).state == asyncjobs.TaskState.COMPLETED
        with pytest.raises(asyncjobs.TaskNotFound):  # discarded by the worker
            await producer.get_task(bounced.id)

        assert {t.id async for t in admin.admin.tasks()} == {sent.id, rendered.id, lost.id}
        assert (await admin.admin.queue_info("EMAIL")).items == 0
        await admin.admin.purge_queue("EMAIL")
        async with asyncio.timeout(10), admin.events(replay=True) as replayed:
            assert (await anext(replayed)).task_id == sent.id
    finally:
        for client in clients:
            await client.close()
        await service.close()
    assert not _violations(accounts_server)


async def test_nkey_users(tmp_path: Path, certs: Path, passwords: dict[str, str]) -> None:
    documented = DOC_NKEY.findall(BLOCKS["nkeys.conf"])
    assert len(documented) == 4, "nkeys.conf shows the four users' keys: admin, producer, worker, render"
    # Our own key pairs in place of the page's example keys, in the same order.
    seeds = {}
    for role, example in zip(("admin", "producer", "worker", "render"), documented, strict=True):
        seed = nkeys.encode_seed(bytes([len(seeds)] * 32), nkeys.PREFIX_BYTE_USER)
        seeds[example] = (tmp_path / f"{role}.nk", seed)
        seeds[example][0].write_bytes(seed)
    replace = {example: nkeys.from_seed(bytearray(seed)).public_key.decode() for example, (_, seed) in seeds.items()}
    conf = _materialise(tmp_path / "conf", certs, replace=replace)
    admin_seed, worker_seed = (str(seeds[documented[n]][0]) for n in (0, 2))
    router = asyncjobs.Router()

    @router.handler("email:new")
    async def send(task: asyncjobs.Task) -> str:
        return "sent"

    async with _server(conf / "nkeys.conf") as server:
        with pytest.raises(asyncjobs.JetStreamError, match="authorization violation"):
            await asyncjobs.connect(server.url, connect_timeout=1)
        async with await asyncjobs.connect(server.url, nkey_seed_file=admin_seed, queue="EMAIL") as admin:
            task = await admin.enqueue(asyncjobs.Task("email:new"))
        queue = asyncjobs.Queue("EMAIL", no_create=True)
        async with await asyncjobs.connect(server.url, nkey_seed_file=worker_seed, queue=queue) as worker:
            await worker.run(router, until_idle=True)
            assert (await worker.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED
    assert not _violations(server)


async def test_tls_and_mutual_tls(
    tmp_path: Path, certs: Path, passwords: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _materialise(tmp_path / "conf", certs)
    login = {"user": "aj-admin", "password": passwords["AJ_ADMIN_PASSWORD"]}
    async with _server(conf / "tls.conf") as server:
        url = server.url.replace("nats://", "tls://")
        async with await asyncjobs.connect(url, tls_ca_file=str(certs / "ca.pem"), queue="EMAIL", **login) as client:
            await client.enqueue(asyncjobs.Task("email:new"))
    async with _server(conf / "mtls.conf") as server:
        url = server.url.replace("nats://", "tls://")
        with pytest.raises(asyncjobs.JetStreamError, match="cannot connect"):
            await asyncjobs.connect(url, tls_ca_file=str(certs / "ca.pem"), connect_timeout=1, **login)
        # The documented context, pointing at this server and these files.
        context = _context(
            "aj-worker-mtls",
            {
                "tls://nats.example.net:4222": url,
                "/etc/asyncjobs/tls": str(certs),
                "$AJ_WORKER_PASSWORD": passwords["AJ_WORKER_PASSWORD"],
            },
        )
        context_dir = tmp_path / "xdg" / "nats" / "context"
        context_dir.mkdir(parents=True)
        (context_dir / "aj-worker-mtls.json").write_bytes(orjson.dumps(context))
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        client_cert = {"tls_cert_file": str(certs / "worker-cert.pem"), "tls_key_file": str(certs / "worker-key.pem")}
        async with await asyncjobs.connect(
            url, tls_ca_file=str(certs / "ca.pem"), queue="EMAIL", **client_cert, **login
        ) as admin:
            task = await admin.enqueue(asyncjobs.Task("email:new"))
        router = asyncjobs.Router()

        @router.handler("email:new")
        async def send(task: asyncjobs.Task) -> str:
            return "sent"

        queue = asyncjobs.Queue("EMAIL", no_create=True)
        async with await asyncjobs.connect(context="aj-worker-mtls", queue=queue) as worker:
            await worker.run(router, until_idle=True)
            assert (await worker.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED
    assert not _violations(server)


async def _answers(url: str, subject: str, login: dict[str, str]) -> bool:
    nc = await nats.connect(url, **login)
    try:
        await nc.request(subject, b"", timeout=1)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return False
    finally:
        await nc.close()
    return True


def _leafnode_port(hub: NatsServer) -> int | None:
    for line in hub.log_tail:
        found = re.search(r"Listening for leafnode connections on \S+:(\d+)", line)
        if found:
            return int(found[1])
    return None


async def test_leaf_node_client_uses_the_hub_domain(tmp_path: Path, certs: Path, passwords: dict[str, str]) -> None:
    hub_conf = _materialise(tmp_path / "hub", certs, replace={"port: 7422": 'listen: "127.0.0.1:-1"'}) / "hub.conf"
    documented_prefix = re.search(r'api_prefix="([^"]+)"', DOC.read_text())
    assert documented_prefix, "the page shows no api_prefix"
    router = asyncjobs.Router()

    @router.handler("email:new")
    async def send(task: asyncjobs.Task) -> str:
        return "sent"

    async with _server(hub_conf) as hub:
        port = _leafnode_port(hub)
        assert port, "the hub logged no leafnode port"
        remote = "nats-leaf://aj-leaf:LEAF_PASSWORD@hub.example.net:7422"
        assert remote in BLOCKS["leaf.conf"]
        replace = {remote: f"nats-leaf://aj-leaf:{passwords['AJ_LEAF_PASSWORD']}@127.0.0.1:{port}"}
        async with _server(_materialise(tmp_path / "leaf", certs, replace=replace) / "leaf.conf") as leaf:
            await eventually(
                lambda: any("Leafnode connection created" in line for line in leaf.log_tail),
                message="the leaf node's link to the hub",
            )
            login = {"user": "aj-edge", "password": passwords["AJ_EDGE_PASSWORD"]}
            # The link is up before the hub's JetStream API is reachable through it (interest still propagating).
            await eventually(
                lambda: _answers(leaf.url, f"{documented_prefix[1]}.INFO", login),
                message="the hub's JetStream API answering through the leaf node",
            )
            async with await asyncjobs.connect(
                leaf.url, api_prefix=documented_prefix[1], queue="EMAIL", **login
            ) as client:
                task = await client.enqueue(asyncjobs.Task("email:new"))
                await client.run(router, until_idle=True)
                assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED
                # Key-value writes cross the link too: the purge is recorded in the hub's configuration bucket.
                await client.admin.purge_queue("EMAIL")
                config = KeyValue(JetStream(client.nc, api_prefix=documented_prefix[1]), CONFIG_BUCKET)
                assert await config.get("queue_purged.EMAIL") is not None
            # The queue lives in the hub's domain: the hub's own admin sees it.
            login = {"user": "aj-admin", "password": passwords["AJ_ADMIN_PASSWORD"]}
            async with await asyncjobs.connect(hub.url, no_storage_init=True, **login) as admin:
                assert "EMAIL" in await admin.admin.queue_names()
        assert not _violations(hub, leaf)
