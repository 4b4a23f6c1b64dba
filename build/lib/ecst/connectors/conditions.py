"""`--where` conditions: checked to be one SQL condition before they are sent to Debezium.

ecst never runs a condition itself (no estimate, no EXPLAIN: user text never becomes SQL that ecst
executes). It only travels, as data, in an `execute-snapshot` signal's `additional-conditions`.
Debezium then pastes it into its own chunk queries, run as the connector's role:

    SELECT … FROM "public"."users" WHERE <key range> AND (<condition>) ORDER BY "id" LIMIT 2048

So the condition must stay one expression inside those parentheses. A small lexer (quoted strings
and identifiers are skipped as Postgres skips them) refuses what could end or reshape that query: a
`;`, a comment, a `)` that closes more than the condition opened, dollar quoting, and backslashes
(whose meaning depends on `standard_conforming_strings`). It also refuses calls of functions that
sleep, lock, signal, write or read files, or consume replication slots: the condition is evaluated
for every row the chunk query reads. This is a guard against mistakes and pasted text, not a
sandbox: the connector's role (LOGIN REPLICATION and SELECT on the captured tables, checked by
`ecst connectors doctor`) is what bounds what a condition can do. Debezium reports a condition
Postgres refuses (a syntax error, a table the role cannot read) as a failed table scan, which
`ecst rebootstrap` turns into an error.
"""

from __future__ import annotations

import re

from ecst.exceptions import ConfigError

# Functions a row filter has no business calling (names as Postgres folds them).
REFUSED_FUNCTIONS = frozenset({
    "pg_sleep", "pg_sleep_for", "pg_sleep_until", "pg_terminate_backend", "pg_cancel_backend",
    "pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal", "pg_create_restore_point", "pg_promote",
    "pg_notify", "set_config", "nextval", "setval", "txid_current", "pg_current_xact_id",
    "pg_logical_emit_message", "pg_export_snapshot", "pg_stat_file", "pg_log_backend_memory_contexts",
    "pg_drop_replication_slot", "pg_replication_slot_advance", "pg_import_system_collations",
})
REFUSED_PREFIXES = (
    "pg_advisory", "pg_try_advisory", "dblink", "lo_", "pg_read_", "pg_ls_", "pg_file_",
    "pg_create_", "pg_copy_", "pg_logical_slot_", "pg_replication_origin_", "pg_stat_reset",
    "pg_backup_", "pg_start_backup", "pg_stop_backup", "pg_wal_replay_",
    "query_to_xml", "cursor_to_xml", "table_to_xml", "schema_to_xml", "database_to_xml",
)
_IDENT_START = re.compile(r"[A-Za-z_\u0080-\U0010ffff]")
_IDENT = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")


MAX_CONDITION = 1500  # the whole signal (collections, type, condition) fits varchar(2048)


def refused_function(name: str) -> bool:
    """Whether `name` (as Postgres folds it) is a function a `--where` may not call."""
    return name in REFUSED_FUNCTIONS or name.startswith(REFUSED_PREFIXES)


def _quoted(text: str, start: int, quote: str, what: str) -> tuple[str, int]:
    """The content of a quoted string or identifier opening at `start` (doubled quotes stand for
    one), and the index after its closing quote."""
    i, out = start + 1, []
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise ConfigError(f"--where has an unterminated {what} (opened at character {start + 1}): "
                              f"close it with {quote}")
        out.append(text[i:end])
        if text.startswith(quote * 2, end):
            out.append(quote)
            i = end + 2
            continue
        return "".join(out), end + 1


def check_condition(condition: str) -> str:
    """The condition, stripped, when it is one SQL condition ecst may send to Debezium; else a
    ConfigError (one line) naming what was refused and what to do."""
    text = condition.strip()
    if not text:
        raise ConfigError("--where is empty: give an SQL condition such as \"id <= 1000\"")
    if "\\" in text:
        raise ConfigError("--where may not contain a backslash: its meaning depends on the producer's "
                          "standard_conforming_strings; write the value without it (for LIKE patterns, "
                          "LIKE 'a!_%' ESCAPE '!')")
    if "\x00" in text:
        raise ConfigError("--where contains a NUL character: remove it")
    if len(text) > MAX_CONDITION:
        raise ConfigError(f"--where is {len(text):,} characters long, over {MAX_CONDITION:,}: the signal "
                          "that carries it must fit the signal table's data column (varchar(2048)); "
                          "shorten it")
    depth, i, last_name = 0, 0, None  # last_name: the identifier just before, if any
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        name = None
        if ch == "'":
            _, i = _quoted(text, i, "'", "string")
        elif ch == '"':
            name, i = _quoted(text, i, '"', "quoted identifier")
        elif _IDENT_START.match(ch):
            m = _IDENT.match(text, i)
            assert m is not None
            name = m.group().lower()  # E'…', B'…', X'…': a prefix, then a string
            i = m.end()
        elif text.startswith("--", i) or text.startswith("/*", i):
            raise ConfigError("--where may not contain comments (-- or /*): Debezium puts the condition "
                              "inside its own query, where a comment would cut that query short; "
                              "remove the comment")
        elif ch == ";":
            raise ConfigError("--where must be one SQL condition: it contains ; outside a quoted string "
                              "(the start of another statement); remove it")
        elif ch == "$":
            raise ConfigError("--where may not use dollar quoting or $n parameters: write strings in "
                              "single quotes ('DE')")
        elif ch == "(":
            if last_name is not None and refused_function(last_name):
                raise ConfigError(f"--where calls {last_name}(), which ecst refuses: Debezium evaluates the "
                                  "condition for every row its snapshot queries read, as the connector's "
                                  "role, so it may only read; functions that sleep, lock, signal, write or "
                                  "touch replication slots are refused")
            depth += 1
            i += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"--where has unbalanced parentheses (character {i + 1} closes one that "
                                  "was never opened): the condition must stay inside the parentheses "
                                  "Debezium puts around it")
            i += 1
        else:
            i += 1  # operators, numbers, commas, casts, brackets, dots (pg_catalog.pg_sleep)
        last_name = name
    if depth:
        raise ConfigError(f"--where has unbalanced parentheses ({depth} opened, never closed): close them")
    return text
