"""apply's key check: a producer database it cannot reach is one ProducerError naming it."""

from pathlib import Path

import pytest

from ecst.connectors.apply import check_keys
from ecst.connectors.definition import load_definitions
from ecst.exceptions import ProducerError

ROOT = Path(__file__).resolve().parents[3]


def test_an_unreachable_producer_database_names_it_and_offers_to_skip_the_check():
    defs = load_definitions([ROOT / "connectors" / "users.yaml"], environ={})
    with pytest.raises(ProducerError) as err:
        check_keys(defs, ("postgresql://svc:pw-123456@127.0.0.1:1/app", None))
    message = str(err.value)
    assert message.startswith("cannot reach the producer database postgresql://svc@127.0.0.1:1/app to check "
                              "the captured tables' keys (")
    assert message.endswith("fix --producer-url (or ECST_PRODUCER_URL), or pass --skip-key-check to go "
                            "without the check")
    assert "pw-123456" not in message


def _change(action, **diff):
    from ecst.connectors.apply import Change

    return Change("users", action, {k: tuple(v) for k, v in diff.items()})


def test_an_update_of_a_slot_prefix_or_snapshot_key_is_destructive_and_says_why():
    from ecst.connectors.apply import UPDATED, destructive

    risky = destructive(_change(UPDATED, **{"slot.name": ("a", "b"), "topic.prefix": ("p", "q"),
                                            "heartbeat.interval.ms": ("1000", "5000")}))
    assert set(risky) == {"slot.name", "topic.prefix"}
    assert "old slot stays behind" in risky["slot.name"] and "snapshots again" in risky["topic.prefix"]


def test_creating_a_connector_or_changing_harmless_keys_is_not_destructive():
    from ecst.connectors.apply import CREATED, UPDATED, destructive

    assert destructive(_change(CREATED, **{"slot.name": (None, "b")})) == {}
    assert destructive(_change(UPDATED, **{"heartbeat.interval.ms": ("1000", "5000")})) == {}
