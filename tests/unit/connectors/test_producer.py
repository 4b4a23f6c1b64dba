"""The producer database: which one (`producer_target`, the local stack's only when injected), and
the planner's row estimate, which quotes the table name and never runs a user's text."""

from psycopg import sql

from ecst.connectors.producer import estimate_rows, producer_target
from ecst.settings import Secret, Settings
from ecst.stack import local
from tests.unit.connectors.fakes import FakeConn


def test_the_url_then_the_setting_then_the_fallback(tmp_path):
    settings = Settings(home=tmp_path)
    fallback = lambda s: ("host=local", "pw")  # noqa: E731
    assert producer_target(settings, "postgresql://given") == ("postgresql://given", None)
    assert producer_target(settings, None, fallback) == ("host=local", "pw")
    assert producer_target(settings) is None  # no fallback injected: none is known
    configured = Settings(home=tmp_path, producer_url=Secret("postgresql://env"))
    assert producer_target(configured, None, fallback) == ("postgresql://env", None)


def test_the_local_stack_wrapper_keeps_its_signature(tmp_path):
    settings = Settings(home=tmp_path)  # a home without a local stack's credentials
    assert local.producer_target(settings) is None
    assert local.producer_target(settings, "postgresql://given") == ("postgresql://given", None)


def test_the_estimate_is_an_explain_of_a_quoted_name_in_a_read_only_transaction():
    conn = FakeConn(answers=[None, ([{"Plan": {"Plan Rows": 1234}}],)])
    assert estimate_rows(conn, 'public.users"; DROP TABLE users; --') == 1234
    (read_only, _), (query, params) = conn.executed
    assert read_only == "SET TRANSACTION READ ONLY" and params is None
    assert query == sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(
        sql.Identifier("public", 'users"; DROP TABLE users; --'))
