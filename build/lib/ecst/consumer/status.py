"""`ecst status`: what a private state holds, and how far a rebuild of it is, read from the
state database alone (so it works while the consumer or `ecst rebootstrap` run elsewhere)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from ecst.consumer.outage import reason, transient, unavailable
from ecst.consumer.schema import OFFSETS_TABLE
from ecst.consumer.store import StateStore, make_engine
from ecst.exceptions import StateStoreError


def state_status(url: str) -> dict[str, Any]:
    """A JSON-able report: tables and row counts, offsets, snapshots, rebuild in progress."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            initialised = inspect(conn).has_table(OFFSETS_TABLE)
    except SQLAlchemyError as exc:
        safe = engine.url.render_as_string(hide_password=True)
        if transient(exc):
            raise unavailable(exc, safe) from exc
        raise StateStoreError(f"cannot open state store {safe}: {reason(exc)}") from exc
    finally:
        engine.dispose()
    if not initialised:
        raise StateStoreError(f"{engine.url.render_as_string(hide_password=True)} holds no ecst state "
                              "(no ecst_offsets table): has a consumer run against it?")
    store = StateStore(url)
    try:
        offsets: dict[str, dict[int, int]] = {}
        for (topic, partition), offset in sorted(store.stored_offsets().items()):
            offsets.setdefault(topic, {})[partition] = offset
        rebuild = store.rebuild_in_progress()
        if rebuild is not None:
            elapsed = time.time() - float(rebuild.get("started_at", time.time()))
            rate = float(rebuild.get("rate") or 0.0)
            left = int(rebuild.get("rows_expected") or 0) - int(rebuild.get("rows_applied") or 0)
            rebuild = {**rebuild, "elapsed_s": round(elapsed, 1),
                       "eta_s": round(left / rate, 1) if rate > 0 and left > 0 else None}
        return {
            "state": store.safe_url,
            "generation": store.generation,
            "tables": {t: store.count(t) for t in store.tables()},
            "offsets": offsets,
            "snapshots": {t: s.state for t, s in sorted(store.snapshot_states().items())},
            "rebuild_in_progress": rebuild,
            "last_rebuild": store.rebuild_record(),
        }
    finally:
        store.close()


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    lines = [f"state       {report['state']} (generation {report['generation']})"]
    for table, rows in report["tables"].items():
        lines.append(f"table       {table}: {rows:,} rows")
    for topic, parts in report["offsets"].items():
        lines.append(f"offsets     {topic}: " + ", ".join(f"[{p}]={o}" for p, o in parts.items()))
    for topic, state in report["snapshots"].items():
        lines.append(f"snapshot    {topic}: {state}")
    r = report["rebuild_in_progress"]
    if r is None:
        lines.append("rebuild     none in progress")
    else:
        expected = int(r.get("rows_expected") or 0)
        done = int(r.get("rows_applied") or 0)
        unit = f" {r['unit']}" if r.get("unit") else ""  # replay: offsets; snapshot modes: rows
        of = (f"/{expected:,}{unit} ({min(1.0, done / expected):.0%})" if expected
              else f"{unit} (total unknown)")
        eta = f", ETA {r['eta_s']:.0f} s" if r.get("eta_s") is not None else ""
        where = f" --where {r['condition']!r}" if r.get("condition") else ""
        lines.append(f"rebuild     {r['mode']}{where} {r['phase']}: {done:,}{of}, "
                     f"{float(r.get('rate') or 0):,.0f}/s, running {r['elapsed_s']:.0f} s{eta}")
    last = report["last_rebuild"]
    if last is not None and last.get("result"):
        res = last["result"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.get("finished_at", 0)))
        lines.append(f"last        {res['mode']} rebuild finished {when} in {res['seconds']:.1f} s "
                     f"({res['records']:,} records, {res['snapshot_rows']:,} snapshot rows)")
    return "\n".join(lines)
