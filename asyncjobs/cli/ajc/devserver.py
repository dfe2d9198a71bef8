"""``ajc dev-server``: an embedded nats-server with JetStream for development, in the foreground."""

from __future__ import annotations

import click


@click.command("dev-server", help="Run a local NATS server with JetStream for development")
def dev_server() -> None:
    raise NotImplementedError
