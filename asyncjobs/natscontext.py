"""NATS CLI contexts (``nats context add``): where they live and the parts of one a client uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from asyncjobs.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class NatsContext:
    """The parts of a NATS CLI context (``nats context add``) that a client uses."""

    name: str
    url: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""
    nkey: str = ""
    cert: str = ""
    key: str = ""
    ca: str = ""
    inbox_prefix: str = ""
    jetstream_domain: str = ""
    jetstream_api_prefix: str = ""

    @property
    def api_prefix(self) -> str | None:
        """The JetStream API prefix the context selects, if any."""
        if self.jetstream_api_prefix:
            return self.jetstream_api_prefix
        if self.jetstream_domain:
            return f"$JS.{self.jetstream_domain}.API"
        return None


def context_dir() -> Path:
    """Where the NATS CLI keeps contexts (``$XDG_CONFIG_HOME/nats/context``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nats" / "context"


def load_context(name: str | None = None) -> NatsContext:
    """Read a NATS CLI context; ``None`` or ``""`` reads the selected one (``nats context select``).

    Raises:
        ConfigurationError: the context does not exist or cannot be read.
    """
    directory = context_dir()
    if not name:
        selected = directory.parent / "context.txt"
        try:
            name = selected.read_text().strip()
        except OSError:
            name = ""
        if not name:
            raise ConfigurationError("no NATS context is selected: pass a context name or run `nats context select`")
    if "/" in name or name.startswith("."):
        raise ConfigurationError(f"invalid NATS context name {name!r}")
    path = directory / f"{name}.json"
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(
            f"NATS context {name!r} not found at {path}: create it with `nats context add {name} --server URL`"
        ) from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read NATS context {name!r} at {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"NATS context {name!r} at {path} is not a JSON object")
    fields = {key: str(data[key]) for key in NatsContext.__dataclass_fields__ if key != "name" and data.get(key)}
    return NatsContext(name=name, **fields)
