"""Messages read back from a stream (``STREAM.MSG.GET``): their decoding, headers included."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncjobs.constants import HDR_STATUS
from asyncjobs.errors import CorruptDataError


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message read back from a stream with ``STREAM.MSG.GET``."""

    subject: str
    seq: int
    data: bytes
    encoded_headers: str = ""

    @property
    def headers(self) -> dict[str, str]:
        """The stored message's headers (decoded on demand: the hot path never needs them)."""
        return parse_headers(base64.b64decode(self.encoded_headers)) if self.encoded_headers else {}


def decode_stored(reply: Mapping[str, Any], what: str) -> StoredMessage:
    """Decode the ``message`` of a ``STREAM.MSG.GET`` reply.

    Raises:
        CorruptDataError: the reply is malformed.
    """
    try:
        message = reply["message"]
        data = base64.b64decode(message.get("data") or b"")
        return StoredMessage(str(message["subject"]), int(message["seq"]), data, message.get("hdrs") or "")
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptDataError(f"{what}: malformed stored message: {exc}") from exc


def parse_headers(raw: bytes) -> dict[str, str]:
    """Parse a NATS header block (``NATS/1.0\\r\\nKey: value\\r\\n...``)."""
    headers: dict[str, str] = {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    if first.startswith("NATS/1.0") and len(first) > len("NATS/1.0"):
        status = first[len("NATS/1.0") :].strip().split(" ", 1)
        headers[HDR_STATUS] = status[0]
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers
