"""A minimal NATS operator-mode set-up for tests: operator, system and app accounts, one user and its creds file.

The JWTs are the NATS v2 format (an ed25519-nkey signed JWT per entity), built here so the test needs no `nsc`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys

_LIMITS = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> tuple[bytes, nkeys.KeyPair, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return seed, pair, pair.public_key.decode()


def _jwt(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {**claims, "iat": int(time.time())}
    digest = hashlib.sha256(json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{_b64(signer.sign(f'{header}.{payload}'.encode()))}"


def write_operator_setup(directory: Path) -> tuple[Path, Path]:
    """Write ``server.conf`` (operator mode, JetStream allowed for the app account) and ``user.creds``."""
    _, operator, operator_pub = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, app, app_pub = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, _, system_pub = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, _, user_pub = _keypair(nkeys.PREFIX_BYTE_USER)
    operator_claims = {"type": "operator", "version": 2, "system_account": system_pub}
    operator_jwt = _jwt({"iss": operator_pub, "sub": operator_pub, "name": "op", "nats": operator_claims}, operator)
    app_claims = {"type": "account", "version": 2, "limits": {**_LIMITS, **_JETSTREAM}}
    app_jwt = _jwt({"iss": operator_pub, "sub": app_pub, "name": "app", "nats": app_claims}, operator)
    system_claims = {"type": "account", "version": 2, "limits": _LIMITS}
    system_jwt = _jwt({"iss": operator_pub, "sub": system_pub, "name": "SYS", "nats": system_claims}, operator)
    user_claims = {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    user_jwt = _jwt({"iss": app_pub, "sub": user_pub, "name": "worker", "nats": user_claims}, app)
    config = directory / "operator.conf"
    config.write_text(
        f'operator: "{operator_jwt}"\nsystem_account: "{system_pub}"\nresolver: MEMORY\n'
        f'resolver_preload: {{\n  {app_pub}: "{app_jwt}"\n  {system_pub}: "{system_jwt}"\n}}\n'
    )
    creds = directory / "user.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )
    return config, creds
