"""The producer side, for the demo and the tests: the `users` table, its capture set-up, and
writes made the way the producer service would make them. Only configuration is added to
the producer database (publication, grants); its table and code stay as they are."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from ecst.connectors.producer import scalar
from ecst.settings import Settings
from ecst.stack.postgres import CONNECTOR_ROLE

PROJECT_DIR = Settings().project_dir

USERS_SQL = "deploy/sql/users.sql"  # shared with docker-compose's init script
SIGNAL_SQL = "deploy/sql/signal.sql"
SIGNAL_TABLE = "ecst_signal"
HEARTBEAT_SQL = "deploy/sql/heartbeat.sql"
HEARTBEAT_TABLE = "ecst_heartbeat"  # what connectors/users.yaml's heartbeat.action.query writes


def _ddl(project_dir: Path, path: str, table: str) -> sql.Composed:
    parts = (project_dir / path).read_text().split(':"table"')  # psql's variable
    pieces: list[sql.Composable] = [sql.SQL(parts[0])]
    for part in parts[1:]:
        pieces += [sql.Identifier(table), sql.SQL(part)]
    return sql.Composed(pieces)


def users_ddl(project_dir: Path, table: str) -> sql.Composed:
    """The users table's DDL from deploy/sql/users.sql, for table `table`."""
    return _ddl(project_dir, USERS_SQL, table)


SEED = """
INSERT INTO {table} (email, full_name, country, balance, active, birth_date, last_login, created_at)
SELECT 'user' || g || '@example.com',
       'User ' || g,
       (ARRAY['DE','FR','US','JP','BR'])[1 + g % 5],
       round((random() * 10000)::numeric, 2),
       g % 7 <> 0,
       date '1960-01-01' + (g * 37 % 15000),
       timestamp '2024-01-01 00:00:00.123456' + g * interval '17 minutes 3.5 seconds',
       now() - g * interval '1 hour'
FROM generate_series({start}, {stop}) AS g
"""


def create_users_table(conn: psycopg.Connection, table: str, rows: int, *, replace: bool = False,
                       project_dir: Path = PROJECT_DIR) -> None:
    """The producer's table, with `rows` users that exist before any connector."""
    ident = sql.Identifier(table)
    if replace:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(ident))
    conn.execute(users_ddl(project_dir, table))
    if rows:
        conn.execute(sql.SQL(SEED).format(table=ident, start=sql.Literal(1), stop=sql.Literal(rows)))


def prepare_capture(conn: psycopg.Connection, table: str, publication: str,
                    role: str = CONNECTOR_ROLE, *, signal_table: str | None = SIGNAL_TABLE,
                    heartbeat_table: str | None = HEARTBEAT_TABLE, project_dir: Path = PROJECT_DIR) -> None:
    """What the connector needs, as database configuration by the table's owner: a publication
    for exactly this table, plus Debezium's signal table (ad-hoc snapshots) and the heartbeat
    table (heartbeat.action.query); SELECT for the least-privilege connector role, INSERT on the
    signal table for its watermarks, INSERT and UPDATE on the heartbeat table."""
    extra = [t for t in (signal_table, heartbeat_table) if t]
    if signal_table:
        conn.execute(_ddl(project_dir, SIGNAL_SQL, signal_table))
    if heartbeat_table:
        conn.execute(_ddl(project_dir, HEARTBEAT_SQL, heartbeat_table))
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(publication), sql.SQL(", ").join(map(sql.Identifier, [table, *extra]))))
    for t in extra if exists else ():
        if not conn.execute("SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND tablename = %s",
                            (publication, t)).fetchone():
            conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                sql.Identifier(publication), sql.Identifier(t)))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
        sql.Identifier(table), sql.Identifier(role)))
    if signal_table:
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
            sql.Identifier(signal_table), sql.Identifier(role)))
    if heartbeat_table:
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
            sql.Identifier(heartbeat_table), sql.Identifier(role)))


def signal_table_of(config: dict[str, str]) -> str | None:
    """The signal table's name (without schema) in a connector config, if it has one."""
    collection = config.get("signal.data.collection")
    return collection.split(".")[-1] if collection else None


def drop_capture(conn: psycopg.Connection, slot: str, publication: str) -> None:
    """Remove a connector's slot (must be inactive) and publication."""
    conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name = %s AND NOT active", (slot,))
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))


@dataclass
class Changes:
    """Counts of the writes `write_changes` made."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0


def write_changes(conn: psycopg.Connection, table: str, *, inserts: int, updates: int,
                  deletes: int, seed: int = 0, per_txn: int = 25) -> Changes:
    """Live inserts, updates and deletes, in small transactions, on random existing users."""
    rnd = random.Random(seed)
    t = sql.Identifier(table)
    done = Changes()
    ids = [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(t))]
    next_id = scalar(conn, sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(t))
    plan = ["i"] * inserts + ["u"] * updates + ["d"] * deletes
    rnd.shuffle(plan)
    for start in range(0, len(plan), per_txn):
        with conn.transaction():
            for op in plan[start : start + per_txn]:
                if op == "i":
                    next_id += 1
                    new_id = scalar(
                        conn,
                        sql.SQL("INSERT INTO {} (email, full_name, country, balance, birth_date, "
                                "last_login) VALUES (%s, %s, %s, %s, %s, now()) RETURNING id").format(t),
                        (f"new{next_id}-{seed}@example.com", f"New user {next_id}",
                         rnd.choice(["DE", "NL", None]), f"{rnd.randint(0, 99999)}.{rnd.randint(0, 99):02d}",
                         None),
                    )
                    ids.append(new_id)
                    done.inserted += 1
                elif op == "u" and ids:
                    uid = rnd.choice(ids)
                    conn.execute(
                        sql.SQL("UPDATE {} SET full_name = full_name || '*', balance = balance + %s, "
                                "active = NOT active, updated_at = now() WHERE id = %s").format(t),
                        (f"{rnd.randint(1, 500)}.{rnd.randint(0, 99):02d}", uid),
                    )
                    done.updated += 1
                elif op == "d" and ids:
                    uid = ids.pop(rnd.randrange(len(ids)))
                    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (uid,))
                    done.deleted += 1
    return done
