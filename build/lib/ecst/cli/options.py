"""Options more than one command module uses: the Connect cluster's, and the consumer state's."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ecst.connectors.client import ConnectClient
from ecst.connectors.contexts import resolve
from ecst.consumer.config import ConsumerConfig, load_consumer_config
from ecst.settings import Secret, Settings


def cluster_options(f: Callable) -> Callable:
    """--connect-url / --context / --user on every command that talks to Connect."""
    @click.option("--connect-url", envvar="ECST_CONNECT_URL",
                  help="Kafka Connect REST URL. Default: the context's, else the local stack's.")
    @click.option("--context", help="Named cluster from ~/.config/ecst/contexts.yaml (ECST_CONTEXTS).")
    @click.option("--user", envvar="ECST_CONNECT_USER",
                  help="Basic-auth user; the password is read from ECST_CONNECT_PASSWORD.")
    @functools.wraps(f)
    def wrapper(*args: Any, connect_url: str | None, context: str | None, user: str | None,
                **kwargs: Any) -> Any:
        settings: Settings = click.get_current_context().obj
        ctx = resolve(connect_url, context, settings.effective_connect_url, user)
        return f(*args, client=ConnectClient(ctx.url, auth=ctx.auth), **kwargs)

    return wrapper


state_options = [
    click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
                 help="The consumer's YAML (topics, mapping, state URL)."),
    click.option("--state-url", envvar="ECST_STATE_URL", help="SQLAlchemy URL of the private state."),
    click.option("--topic", "topics", multiple=True, help="Debezium change topic; repeatable."),
]


def with_state_options(f: Callable) -> Callable:
    """-c/--config, --state-url and --topic: which private state a command reads or rebuilds."""
    for option in reversed(state_options):
        f = option(f)
    return f


def consumer_config(config_file: str | None, state_url: str | None, topics: tuple[str, ...],
                    group: str | None) -> ConsumerConfig:
    """The consumer's config from `with_state_options`' values (and --group, when the command has it)."""
    config = load_consumer_config(config_file) if config_file else ConsumerConfig()
    if topics:
        config = config.with_(topics=tuple(config.mapping(t) for t in topics))
    return config.with_(state_url=Secret(state_url) if state_url else None, group_id=group)
