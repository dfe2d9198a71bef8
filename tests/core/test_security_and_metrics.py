"""TLS and nkey connections, task signatures through the client, and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import urllib.request
from pathlib import Path

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.server import NatsServer
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, running, wait_state
from tests.core.operator_mode import write_operator_setup

SEED = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
PUBLIC_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    args = ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    async with NatsServer(extra_args=args) as server:
        with pytest.raises(asyncjobs.JetStreamError, match="cannot connect"):
            await asyncjobs.connect(server.url, connect_timeout=1)
        async with await asyncjobs.connect(server.url, tls_ca_file=str(cert), queue="TLS") as client:
            assert (await client.enqueue(asyncjobs.Task("x"))).state == TaskState.NEW


async def test_nkey(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    config = tmp_path / "nkey.conf"
    config.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    async with NatsServer(extra_args=["-c", str(config)]) as server:
        with pytest.raises(asyncjobs.JetStreamError, match="cannot connect"):
            await asyncjobs.connect(server.url, connect_timeout=1)
        async with await asyncjobs.connect(server.url, nkey_seed_file=str(seed_file), queue="NK") as client:
            await client.enqueue(asyncjobs.Task("x"))
    with pytest.raises(asyncjobs.ConfigurationError, match="nkey_seed_file"):
        await asyncjobs.connect(server.url, nkey_seed_file=str(tmp_path / "missing.nk"))


async def test_creds_file_in_operator_mode(tmp_path: Path) -> None:
    config, creds = write_operator_setup(tmp_path)
    async with NatsServer(extra_args=["-c", str(config)]) as server:
        with pytest.raises(asyncjobs.JetStreamError, match="cannot connect"):
            await asyncjobs.connect(server.url, connect_timeout=1)
        async with await asyncjobs.connect(server.url, creds_file=str(creds), queue="CREDS") as client:
            task = await client.enqueue(asyncjobs.Task("x"))
            assert (await client.get_task(task.id)).state == TaskState.NEW


async def test_signed_tasks_verified_and_unsigned_refused(make_client: ClientFactory) -> None:
    producer = await make_client(queue="SIG", signing_seed=SEED)
    signed = await producer.enqueue(asyncjobs.Task("x", {"a": 1}))
    assert len(signed.signature) == 128
    plain_producer = await make_client(queue="SIG")
    unsigned = await plain_producer.enqueue(asyncjobs.Task("x", {"a": 2}))
    worker = await make_client(queue="SIG", verification_key=PUBLIC_KEY)
    with pytest.raises(asyncjobs.TaskNotSigned):
        await worker.get_task(unsigned.id)
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> str:
        return "trusted"

    async with running(worker, router):
        done = await wait_state(worker, signed.id, TaskState.COMPLETED)
        assert done.result is not None and done.result.payload == "trusted"
        refused = await wait_state(plain_producer, unsigned.id, TaskState.TERMINATED)
    assert refused.last_err == "task is not signed"
    lenient = await make_client(queue="SIG", verification_key=PUBLIC_KEY, signatures_optional=True)
    assert (await lenient.get_task(signed.id)).signature == signed.signature


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_prometheus_endpoint(make_client: ClientFactory) -> None:
    client = await make_client(queue="PROM", prometheus_port=0)
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.COMPLETED)
        port = await eventually(lambda: client.metrics_port)
        text = await asyncio.to_thread(_scrape, port)
    assert 'choria_asyncjobs_queue_enqueue_count{queue="PROM"}' in text
    assert 'choria_asyncjobs_task_update_total{state="complete"}' in text
    assert 'choria_asyncjobs_handler_runtime_count{queue="PROM",type="x"}' in text
    assert 'choria_asyncjobs_queue_poll_total{queue="PROM"}' in text


async def test_seed_file_signs_and_verifies(make_client: ClientFactory, tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.hex"
    seed_file.write_text(SEED)
    client = await make_client(queue="SEEDF", signing_seed_file=str(seed_file))
    plain = await make_client(queue="SEEDF")
    unsigned = await plain.enqueue(asyncjobs.Task("x"))
    signed = await client.enqueue(asyncjobs.Task("x"))
    assert (await client.get_task(signed.id)).signature == signed.signature
    with pytest.raises(asyncjobs.TaskNotSigned):
        await client.get_task(unsigned.id)
