"""`ecst connectors doctor`: does the producer database give a Debezium Postgres connector what
it needs, and is replication hurting it? Every check says how to fix what it finds.

Checks: wal_level, replication slot and WAL sender headroom, the connector role (REPLICATION,
not a superuser, SELECT on each captured table), the publication (exactly the captured tables),
a key for every captured table (`keys.py`: primary key, message.key.columns or a unique index),
REPLICA IDENTITY (warns when DEFAULT meets TOAST-able columns, or cannot serve a table without a
primary key), heartbeats (and the table heartbeat.action.query writes, which belongs in the
publication), max_slot_wal_keep_size, the connector's own slot (it exists and is active; with what
Kafka Connect says of the connector, a slot that is missing although the connector streamed from it is a lost
slot, and a FAILED task is named with its next step), and the WAL every slot retains (an inactive
slot is the classic way CDC fills a producer's disk).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

import psycopg

from ecst.connectors.definition import ConnectorDefinition
from ecst.connectors.health import Deployment, slot_lost_step, tasks_of
from ecst.connectors.health import diagnose as connector_problem
from ecst.connectors.keys import TableKey, keyless_fix, table_keys
from ecst.connectors.producer import scalar

OK, WARN, FAIL = "ok", "warn", "fail"
DEFAULT_MAX_RETAINED_WAL = 1 << 30  # 1 GiB


@dataclass(frozen=True)
class Finding:
    """The outcome of one check."""

    check: str
    status: str
    message: str
    fix: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _key_finding(key: TableKey) -> Finding:
    name = key.table.qualified
    if key.missing:
        return Finding("primary_key", FAIL, f"message.key.columns names {', '.join(key.missing)} for {name}, "
                       f"which has no such column (columns: {', '.join(key.table.columns)})",
                       "name existing columns in message.key.columns")
    if not key.ok:
        note = f" ({key.note})" if key.note else ""
        return Finding("primary_key", FAIL, f"{name} has no primary key{note}: change events have no key",
                       keyless_fix(name))
    return Finding("primary_key", OK, f"{name} has a key: {key.describe()}")


def _role(config: dict[str, str], role: str | None) -> str | None:
    if role:
        return role
    user = config.get("database.user", "")
    m = re.fullmatch(r"\$\{env:(\w+)\}", user)
    if m:
        return os.environ.get(m.group(1))
    return user or None


def slot_finding(name: str, slot: str, active: bool | None, deployed: Deployment | None,
                 wal_status: str | None = None) -> Finding:
    """Does connector `name`'s slot exist and is it active? `active` is None when the slot does
    not exist; `deployed` is what Kafka Connect says of the connector (None: not reachable);
    `wal_status` is the slot's (`lost`: invalidated, it exceeded max_slot_wal_keep_size)."""
    if active is not None and wal_status == "lost":
        return Finding("slot", FAIL, f"slot {slot} was invalidated (wal_status lost: it exceeded "
                       "max_slot_wal_keep_size), so the WAL the connector still needs is gone",
                       slot_lost_step(name))
    if active is None:
        if deployed is None:
            return Finding("slot", WARN, f"slot {slot} does not exist, and Kafka Connect could not be asked "
                           f"whether connector {name} streamed from it: expected before its first start; "
                           "otherwise the slot was lost", slot_lost_step(name))
        if not deployed.exists:
            return Finding("slot", OK, f"slot {slot} does not exist yet: connector {name} is not deployed, "
                           "and creates it when it first starts")
        if deployed.has_offsets:
            failed = [t for t in tasks_of(deployed.status) if t.state == "FAILED"]
            failed_text = f"; task {failed[0].id} is FAILED: {failed[0].summary}" if failed else ""
            return Finding("slot", FAIL, f"slot {slot} does not exist, but connector {name} has streamed "
                           "from it (its offsets hold a position in it): the slot was dropped or lost"
                           + failed_text, slot_lost_step(name))
        return Finding("slot", WARN, f"slot {slot} does not exist yet: connector {name} has no offsets, and "
                       "creates it when it starts", f"ecst connectors status {name}")
    found = None
    if deployed is not None and deployed.exists:
        found = connector_problem(name, deployed.status, slot, True)
    where = f"slot {slot} is {'active' if active else 'INACTIVE'}"
    if found is not None:
        return Finding("slot", FAIL, f"{where}, and connector {name}: {found.message}", found.next)
    if active:
        return Finding("slot", OK, f"slot {slot} exists and is active")
    if deployed is None:
        return Finding("slot", WARN, f"{where} (Kafka Connect could not be asked why): it retains WAL",
                       f"ecst connectors status {name}")
    if not deployed.exists:
        return Finding("slot", WARN, f"{where} and no connector {name} is deployed: it retains WAL",
                       f"ecst connectors apply -f <file>, or SELECT pg_drop_replication_slot('{slot}') if "
                       "it is abandoned")
    state = str((deployed.status.get("connector") or {}).get("state", "UNKNOWN"))
    if state in ("STOPPED", "PAUSED"):
        return Finding("slot", WARN, f"{where}: connector {name} is {state}, and the slot retains WAL "
                       "until it resumes", f"ecst connectors resume {name}")
    return Finding("slot", WARN, f"{where} while connector {name} is {state}: it is starting or "
                   "reconnecting, or stuck", f"ecst connectors status {name}")


# `INSERT INTO t ...` or `UPDATE t ...`, t plain or quoted, with or without its schema.
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_WRITES = re.compile(rf"^\s*(?:INSERT\s+INTO|UPDATE)\s+({_IDENT})(?:\s*\.\s*({_IDENT}))?", re.I)


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident.lower()


def heartbeat_table(query: str | None) -> str | None:
    """`schema.table` that a heartbeat.action.query of one INSERT or UPDATE writes (public when
    unqualified); None when the query is something else."""
    m = _WRITES.match(query or "")
    if not m:
        return None
    first, second = _unquote(m.group(1)), m.group(2)
    return f"{first}.{_unquote(second)}" if second else f"public.{first}"


def _heartbeat(conn: psycopg.Connection, config: dict[str, str],
               role: str | None) -> tuple[Finding, str | None]:
    """The heartbeat finding, and the table heartbeat.action.query writes (it belongs in the
    publication), when there is one."""
    interval = int(config.get("heartbeat.interval.ms", "0") or 0)
    query = config.get("heartbeat.action.query")
    setup = ("create deploy/sql/heartbeat.sql's table, add it to the publication, GRANT INSERT, UPDATE "
             "on it to the connector's role, and set heartbeat.action.query (see connectors/users.yaml)")
    if interval <= 0:
        return Finding("heartbeat", WARN, "heartbeats are off: an idle captured table on a busy database "
                       "pins WAL", f"set heartbeat.interval.ms (e.g. 10000); {setup}"), None
    if not query:
        return Finding("heartbeat", WARN, f"heartbeats every {interval} ms but no heartbeat.action.query: "
                       "while the captured tables are idle, the slot retains the WAL of every other "
                       "table", setup), None
    table = heartbeat_table(query)
    if table is None:
        return Finding("heartbeat", WARN, f"heartbeats every {interval} ms; cannot tell which table "
                       "heartbeat.action.query writes: it must be in the publication"), None
    if scalar(conn, "SELECT to_regclass(%s)", (table,)) is None:
        return Finding("heartbeat", FAIL, f"heartbeat.action.query writes {table}, which does not exist",
                       setup), table
    if role and conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        lacking = [p for p in ("INSERT", "UPDATE")
                   if not scalar(conn, "SELECT has_table_privilege(%s, %s, %s)", (role, table, p))]
        if lacking:
            return Finding("heartbeat", FAIL, f"role {role} cannot {' or '.join(lacking)} heartbeat table "
                           f"{table}: the connector's heartbeat fails",
                           f"GRANT SELECT, INSERT, UPDATE ON {table} TO {role}"), table
    return Finding("heartbeat", OK, f"heartbeats every {interval} ms, each writing {table}"), table


def diagnose(conn: psycopg.Connection, definition: ConnectorDefinition, *, role: str | None = None,
             max_retained_wal: int = DEFAULT_MAX_RETAINED_WAL,
             deployed: Deployment | None = None) -> list[Finding]:
    """Run every check against the producer database `conn` (read-only); `deployed` is what Kafka
    Connect says of the connector, for the slot check (None: Connect was not reachable)."""
    config = definition.config
    out: list[Finding] = []

    def setting(name: str) -> str:
        return str(scalar(conn, f"SHOW {name}"))

    wal_level = setting("wal_level")
    out.append(Finding("wal_level", OK, "wal_level is logical") if wal_level == "logical" else Finding(
        "wal_level", FAIL, f"wal_level is {wal_level}: logical decoding is off",
        "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"))

    slot = config.get("slot.name", "debezium")
    max_slots = int(setting("max_replication_slots"))
    used_slots = scalar(conn, "SELECT count(*) FROM pg_replication_slots")
    ours = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    free = max_slots - used_slots
    if free <= 0 and not ours:
        out.append(Finding("replication_slots", FAIL, f"all {max_slots} replication slots are in use",
                           "raise max_replication_slots (restart) or drop unused slots"))
    else:
        out.append(Finding("replication_slots", WARN if free < 2 else OK,
                           f"{used_slots} of max_replication_slots={max_slots} in use",
                           "raise max_replication_slots (restart)" if free < 2 else None))
    max_senders = int(setting("max_wal_senders"))
    senders = scalar(conn, "SELECT count(*) FROM pg_stat_replication")
    out.append(Finding("wal_senders", WARN if max_senders - senders < 2 else OK,
                       f"{senders} of max_wal_senders={max_senders} in use",
                       "raise max_wal_senders (restart)" if max_senders - senders < 2 else None))

    keys = table_keys(conn, config, f"{definition.source}: " if definition.source else "")
    names = [k.table.qualified for k in keys]
    if not keys:
        out.append(Finding("tables", FAIL, f"table.include.list {config.get('table.include.list')!r} "
                           "matches no table in this database", "check the list, or the database"))

    rolname = _role(config, role)
    if rolname is None:
        out.append(Finding("role", WARN, "cannot tell the connector's role (database.user is a worker "
                           "reference)", "pass --role, or export the variable it names"))
    else:
        r = conn.execute("SELECT rolsuper, rolreplication, rolcanlogin FROM pg_roles WHERE rolname = %s",
                         (rolname,)).fetchone()
        if r is None:
            out.append(Finding("role", FAIL, f"role {rolname} does not exist",
                               f"CREATE ROLE {rolname} WITH LOGIN REPLICATION PASSWORD '…'"))
        else:
            superuser, replication, login = r
            if superuser:
                out.append(Finding("role", FAIL, f"role {rolname} is a superuser: the connector needs only "
                                   "REPLICATION and SELECT",
                                   f"use a dedicated role: CREATE ROLE cdc LOGIN REPLICATION; "
                                   f"GRANT SELECT ON {', '.join(names) or '<tables>'} TO cdc"))
            elif not replication or not login:
                out.append(Finding("role", FAIL, f"role {rolname} lacks "
                                   f"{'REPLICATION' if not replication else 'LOGIN'}",
                                   f"ALTER ROLE {rolname} WITH LOGIN REPLICATION"))
            else:
                out.append(Finding("role", OK,
                                   f"role {rolname} has LOGIN REPLICATION and is not a superuser "
                                   "(REPLICATION also lets it decode every table of the database through "
                                   "a slot of its own: guard its password like read access to all of them)"))
            missing = [n for n in names if not scalar(
                conn, "SELECT has_table_privilege(%s, %s, 'SELECT')", (rolname, n))]
            if missing:
                out.append(Finding("select", FAIL, f"role {rolname} cannot SELECT {', '.join(missing)}",
                                   f"GRANT SELECT ON {', '.join(missing)} TO {rolname}"))
            elif names:
                out.append(Finding("select", OK, f"role {rolname} can SELECT every captured table"))

    signal = config.get("signal.data.collection")
    if not signal:
        out.append(Finding("signal", WARN, "no signal table (signal.data.collection): ad-hoc "
                           "snapshots (`ecst rebootstrap incremental|blocking`) are unavailable",
                           "create deploy/sql/signal.sql's table, add it to the publication, "
                           "and set signal.data.collection"))
    else:
        s_schema, _, s_table = signal.rpartition(".")
        qualified = f"{s_schema or 'public'}.{s_table}"
        if scalar(conn, "SELECT to_regclass(%s)", (qualified,)) is None:
            out.append(Finding("signal", FAIL, f"signal table {qualified} does not exist",
                               f"psql -v table={s_table} -f deploy/sql/signal.sql"))
        elif rolname and conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (rolname,)).fetchone() \
                and not scalar(conn, "SELECT has_table_privilege(%s, %s, 'INSERT')",
                               (rolname, qualified)):
            out.append(Finding("signal", FAIL, f"role {rolname} cannot INSERT into signal table "
                               f"{qualified} (incremental snapshots write watermarks there)",
                               f"GRANT SELECT, INSERT ON {qualified} TO {rolname}"))
        else:
            out.append(Finding("signal", OK, f"signal table {qualified} exists and is writable"))
        names = [*names, qualified]

    finding, heartbeat_table = _heartbeat(conn, config, rolname)
    out.append(finding)
    if heartbeat_table:
        names = [*names, heartbeat_table]

    keep = setting("max_slot_wal_keep_size")
    out.append(Finding("wal_keep", WARN, "max_slot_wal_keep_size is -1 (unlimited): a slot nobody reads "
                       "retains WAL until the disk fills", "ALTER SYSTEM SET max_slot_wal_keep_size = "
                       "'<a share of the WAL disk>'; SELECT pg_reload_conf()") if keep == "-1" else Finding(
        "wal_keep", OK, f"max_slot_wal_keep_size is {keep}: a slot further behind is invalidated instead of "
        "filling the disk (its connector must then snapshot again)"))

    pub = config.get("publication.name", "dbz_publication")
    autocreate = config.get("publication.autocreate.mode", "all_tables")
    p = conn.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", (pub,)).fetchone()
    if p is None:
        status = FAIL if autocreate == "disabled" else WARN
        out.append(Finding("publication", status, f"publication {pub} does not exist"
                           + ("" if status == FAIL else f" (the connector will create it: {autocreate}, "
                              "which needs table ownership)"),
                           f"as the tables' owner: CREATE PUBLICATION {pub} FOR TABLE {', '.join(names)}"))
    elif p[0]:
        out.append(Finding("publication", WARN, f"publication {pub} publishes ALL tables",
                           f"CREATE PUBLICATION … FOR TABLE {', '.join(names)} and use it instead"))
    else:
        published = sorted(f"{s}.{t}" for s, t in conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (pub,)))
        extra, lacking = sorted(set(published) - set(names)), sorted(set(names) - set(published))
        if extra or lacking:
            fixes = ([f"ALTER PUBLICATION {pub} ADD TABLE {', '.join(lacking)}"] if lacking else []) + \
                    ([f"ALTER PUBLICATION {pub} DROP TABLE {', '.join(extra)}"] if extra else [])
            out.append(Finding("publication", FAIL, f"publication {pub} differs from the captured tables: "
                               f"missing {lacking or 'none'}, extra {extra or 'none'}", "; ".join(fixes)))
        else:
            out.append(Finding("publication", OK, f"publication {pub} covers exactly {', '.join(names)}"))

    for key in keys:
        name, table = key.table.qualified, key.table
        toastable = scalar(
            conn,
            """SELECT EXISTS (SELECT 1 FROM pg_attribute a
                              WHERE a.attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass
                              AND a.attnum > 0 AND NOT a.attisdropped AND a.attlen = -1
                              AND a.attstorage IN ('x', 'e'))""",
            (table.schema, table.name))
        out.append(_key_finding(key))
        identity = table.identity_columns
        if table.replica_identity == "n":
            out.append(Finding("replica_identity", FAIL, f"{name} has REPLICA IDENTITY NOTHING: updates and "
                               "deletes carry no key", f"ALTER TABLE {name} REPLICA IDENTITY "
                               + ("DEFAULT" if table.primary_key else "FULL")))
        elif not identity:  # DEFAULT without a primary key logs no old values, like NOTHING
            out.append(Finding("replica_identity", WARN, f"{name} has no primary key and REPLICA IDENTITY "
                               "DEFAULT: UPDATE and DELETE on it fail on the producer while its publication "
                               "publishes them (fine for an append-only table)",
                               f"ALTER TABLE {name} REPLICA IDENTITY FULL, or USING INDEX <unique index "
                               "on NOT NULL columns>"))
        elif key.ok and not set(key.columns) <= set(identity):
            out.append(Finding("replica_identity", WARN, f"deletes from {name} carry the old values of "
                               f"{', '.join(identity)} only (its replica identity), not of every key column "
                               f"({', '.join(key.columns)}): Debezium fills the others with empty values, "
                               "so a delete misses its row", f"ALTER TABLE {name} REPLICA IDENTITY FULL"))
        elif table.replica_identity == "d" and toastable:
            out.append(Finding("replica_identity", WARN, f"{name} has REPLICA IDENTITY DEFAULT and "
                               "TOAST-able columns: updates that leave a large value untouched carry "
                               "Debezium's unchanged-value placeholder (ecst keeps the stored value)",
                               f"ALTER TABLE {name} REPLICA IDENTITY FULL, if other consumers need them"))
        else:
            out.append(Finding("replica_identity", OK, f"{name} replica identity is fine"))

    row = conn.execute("SELECT active, wal_status FROM pg_replication_slots WHERE slot_name = %s",
                       (slot,)).fetchone()
    out.append(slot_finding(definition.name, slot, None if row is None else bool(row[0]), deployed,
                            None if row is None else row[1]))

    for name, active, retained in conn.execute(
            "SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots ORDER BY slot_name"):
        retained = retained or 0
        if retained <= max_retained_wal:
            out.append(Finding("slot_wal", OK, f"slot {name} ({'active' if active else 'inactive'}) "
                               f"retains {retained:,} bytes of WAL"))
        else:
            out.append(Finding("slot_wal", FAIL if not active else WARN,
                               f"slot {name} is {'active' if active else 'INACTIVE'} and retains "
                               f"{retained:,} bytes of WAL (threshold {max_retained_wal:,})",
                               f"start its consumer, or SELECT pg_drop_replication_slot('{name}') if it is "
                               "abandoned" if not active else
                               "check the connector's lag; set heartbeat.action.query if its tables "
                               "are idle"))
    return out
