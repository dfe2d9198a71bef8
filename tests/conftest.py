"""Shared test set-up: the nats-server fixtures from asyncjobs.testing (nats_server, nats_url, nc, nats_cluster)."""

pytest_plugins = ["asyncjobs.testing"]
