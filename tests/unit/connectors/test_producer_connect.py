"""The producer database's connections: errors name it, never with its password, and say what to do."""

import pytest

from ecst.connectors.producer import connect, describe
from ecst.exceptions import ProducerError


@pytest.mark.parametrize("conninfo, shown", [
    ("postgresql://svc:pw-123456@db.internal:5433/app", "postgresql://svc@db.internal:5433/app"),
    ("host=127.0.0.1 port=55432 user=ecst dbname=producer password=pw-123456",
     "postgresql://ecst@127.0.0.1:55432/producer"),
    ("postgresql:///app?host=/run/postgresql", "postgresql:///app?host=/run/postgresql"),
    ("host=h password='pw 123456' oops", "host=h password=*** oops"),  # not parseable: as given, masked
    ("postgresql://svc:pw-123456@h/app?bogus=1", "postgresql://svc:***@h/app?bogus=1"),
])
def test_describe_names_the_database_without_its_password(conninfo, shown):
    assert describe(conninfo) == shown


def test_an_unreachable_database_names_it_and_says_what_to_do():
    with pytest.raises(ProducerError) as err:
        connect("postgresql://svc:pw-123456@127.0.0.1:1/app", purpose=" to check keys", fix="do this")
    message = str(err.value)
    assert message.startswith("cannot reach the producer database postgresql://svc@127.0.0.1:1/app to check "
                              "keys (") and message.endswith("): do this")
    assert "\n" not in message and "pw-123456" not in message


def test_a_malformed_url_says_how_to_write_one():
    with pytest.raises(ProducerError, match=r"^cannot use the producer database nonsense: .*: use "
                                            r"postgresql://USER@HOST:PORT/DATABASE in --producer-url"):
        connect("nonsense")
