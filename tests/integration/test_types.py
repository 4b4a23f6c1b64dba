"""Every Postgres type the consumer supports round-trips through Debezium with equal values,
including an out-of-line TOASTed text that an update leaves untouched (Debezium then sends its
unchanged-value placeholder, which must never be written)."""

import uuid

import pytest

from tests.integration.conftest import Capture

DDL = """
CREATE TYPE {t}_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {t} (
    id      bigint PRIMARY KEY,
    i2      smallint,  i4 integer,  r4 real,  f8 double precision,
    n_fixed numeric(12,3),  n_free numeric,
    b       boolean,  t text,  vc varchar(20),
    d       date,  tm time,  tmtz timetz,  ts timestamp,  tstz timestamptz,
    iv      interval,
    u       uuid,  j json,  jb jsonb,
    ai      integer[],  at text[],
    by      bytea,
    e       {t}_mood,
    big     text
);
ALTER TABLE {t} ALTER COLUMN big SET STORAGE EXTERNAL;
"""

ROW = """
INSERT INTO {t} VALUES (
    %(id)s, -32768, 2147483647, 1.5, 3.141592653589793,
    123456789.125, 98765432109876543210.0123456789,
    true, 'héllo ☃', 'short',
    '1969-07-20', '23:59:59.999999', '10:15:30+02', '2024-02-29 12:34:56.789012',
    '2024-02-29 12:34:56.789012+05:30',
    '3 days 04:05:06.5',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"k": [1, "two", null]}}', '{{"z": 1, "a": {{"b": false}}}}',
    ARRAY[1, NULL, 3], ARRAY['x', 'y z'],
    '\\x00ff10', 'happy',
    (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 150) g)
)
"""


@pytest.fixture
def typed(stack):
    uid = uuid.uuid4().hex[:10]
    c = Capture(stack, uid, table=f"types_{uid}")
    yield c
    c.close()
    c2 = stack.producer_conn()
    c2.execute(f"DROP TYPE IF EXISTS {c.table}_mood")
    c2.close()


def test_every_type_round_trips_and_toast_placeholders_are_never_written(typed, state_store):
    t = typed.table
    typed.conn.execute(DDL.format(t=t))
    typed.conn.execute(ROW.format(t=t), {"id": 1})                    # a full row
    typed.conn.execute(f"INSERT INTO {t} (id) VALUES (2)")             # a row of NULLs
    typed.prepare()
    typed.apply()
    typed.consumer(state_store).run(until_ready=True)
    result = typed.compare(state_store)
    assert result.matches, result.summary()

    # streamed changes: a new full row, then an update that leaves the TOASTed column alone
    typed.conn.execute(ROW.format(t=t), {"id": 3})
    typed.conn.execute(f"UPDATE {t} SET i4 = 7, t = 'changed' WHERE id IN (1, 3)")
    typed.conn.execute(f"UPDATE {t} SET b = NULL WHERE id = 2")
    result = typed.converge(state_store)
    assert result.matches, result.summary()
    big = {r["id"]: r["big"] for r in state_store.rows(t)}
    assert len(big[1]) == 150 * 32 and big[1] == big[3]  # the stored value was kept, not replaced
