"""The map stage: project and rename a decoded change event for its state table (pure).

A topic's mapping (`topics[]` in the consumer config: `table`, `key`, `columns`) says which
columns the state keeps and under which names; without one the state mirrors the source.
`check_mapping` tells, before anything is written, when a mapping names a column the topic's
records do not carry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ecst.consumer.config import TopicMapping
from ecst.consumer.events import ChangeEvent
from ecst.exceptions import ConfigError


def map_event(event: ChangeEvent, mapping: TopicMapping) -> ChangeEvent:
    """Project and rename an event for its state table (pure; mirrors when nothing is mapped)."""
    if mapping.mirrors:
        return event
    columns = mapping.columns
    rename: Callable[[str], str] = (lambda c: columns.get(c, c)) if columns else (lambda c: c)
    if mapping.key:
        # A delete's `before` is certain only for its record key: under REPLICA IDENTITY DEFAULT
        # Debezium fills the other columns with type defaults ('' for a NOT NULL text).
        sources = [event.key] if event.op == "d" else [event.key, event.after or {}, event.before or {}]
        key: dict[str, Any] = {}
        for k in mapping.key:
            for src in sources:
                if src.get(k) is not None:
                    key[rename(k)] = src[k]
                    break
            else:
                raise ConfigError(_missing_key(event, k))
        key_names = set(mapping.key)
    else:
        key = {rename(k): v for k, v in event.key.items()}
        key_names = set(event.key)
    keep: Callable[[str], bool] = (lambda c: c in columns or c in key_names) if columns else (lambda c: True)
    after = None if event.after is None else {
        rename(c): v for c, v in event.after.items() if keep(c)}
    fields_by_name = {f.name: f for f in (*event.key_fields, *event.fields)}
    return dataclasses.replace(
        event,
        table=mapping.table or event.table,
        key=key,
        after=after,
        before=None,
        fields=tuple(dataclasses.replace(f, name=rename(f.name)) for f in event.fields if keep(f.name)),
        key_fields=tuple(dataclasses.replace(fields_by_name[k], name=rename(k))
                         for k in (mapping.key or event.key) if k in fields_by_name),
    )


def _missing_key(event: ChangeEvent, column: str) -> str:
    """Why a mapped key column has no value in `event` (a key column is never NULL)."""
    where = f"topic {event.topic}: key column {column!r} (topics[].key)"
    if event.op == "d":
        return (f"{where} is not in the key of its delete records ({', '.join(event.key)}): a delete "
                "carries only its record key for certain (Debezium fills the other columns of `before` "
                "with type defaults under REPLICA IDENTITY DEFAULT), so a state keyed otherwise cannot "
                "follow deletes; use the record key's columns as the key")
    if column in source_columns(event):
        return (f"{where} is NULL at offset {event.offset} of partition {event.partition}: a key column "
                "must be NOT NULL in the source; choose another key")
    have = ", ".join(source_columns(event))
    return f"{where} is not in its records (they have {have}): fix the consumer config"


def source_columns(event: ChangeEvent) -> list[str]:
    """The source columns an event's records carry: its schema's fields, else the row's keys."""
    names = dict.fromkeys([f.name for f in (*event.key_fields, *event.fields)])
    for row in (event.key, event.after or {}, event.before or {}):
        names.update(dict.fromkeys(row))
    return list(names)


def check_mapping(event: ChangeEvent, mapping: TopicMapping) -> None:
    """Raise ConfigError, naming the topic and the column, when `mapping` names a key or a column
    that `event`'s records do not carry (checked on a topic's latest records before consuming)."""
    if mapping.mirrors or event.op == "t":
        return
    map_event(event, mapping)  # checks the key
    if mapping.columns and event.op != "d":
        have = set(source_columns(event))
        missing = [c for c in mapping.columns if c not in have]
        if missing:
            raise ConfigError(f"topic {event.topic}: column {missing[0]!r} (topics[].columns) is not in "
                              f"its records (they have {', '.join(source_columns(event))}): fix the "
                              "consumer config")
