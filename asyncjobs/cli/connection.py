"""The connection options every command takes, with the NATS CLI's environment variables as defaults."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``connection`` argument group: server, context, credentials and TLS files."""
    conn = parser.add_argument_group("connection")
    env = os.environ.get
    conn.add_argument("--server", "-s", default=env("NATS_URL"), help="NATS URL(s), comma-separated "
                      "(env NATS_URL; default the context's, else nats://127.0.0.1:4222)")  # fmt: skip
    conn.add_argument("--context", default=env("NATS_CONTEXT"), help="NATS CLI context (env NATS_CONTEXT)")
    conn.add_argument("--user", default=env("NATS_USER"), help="user name (env NATS_USER)")
    conn.add_argument("--password", default=env("NATS_PASSWORD"), help="password (env NATS_PASSWORD)")
    conn.add_argument("--token", default=env("NATS_TOKEN"), help="token (env NATS_TOKEN)")
    conn.add_argument("--creds", default=env("NATS_CREDS"), help="credentials file (env NATS_CREDS)")
    conn.add_argument("--nkey", default=env("NATS_NKEY"), help="nkey seed file (env NATS_NKEY)")
    conn.add_argument("--tls-ca", default=env("NATS_CA"), help="CA to verify the server (env NATS_CA)")
    conn.add_argument("--tls-cert", default=env("NATS_CERT"), help="client certificate (env NATS_CERT)")
    conn.add_argument("--tls-key", default=env("NATS_KEY"), help="client key (env NATS_KEY)")


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`asyncjobs.connect` arguments of the connection group."""
    return {
        "servers": args.server,
        "context": args.context,
        "user": args.user,
        "password": args.password,
        "token": args.token,
        "creds_file": args.creds,
        "nkey_seed_file": args.nkey,
        "tls_ca_file": args.tls_ca,
        "tls_cert_file": args.tls_cert,
        "tls_key_file": args.tls_key,
    }
