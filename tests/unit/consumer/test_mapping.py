"""The map stage: projection, renames, key overrides, and the mapping check."""

import pytest

from ecst.consumer.config import TopicMapping
from ecst.consumer.events import ChangeEvent
from ecst.consumer.mapping import check_mapping, map_event
from ecst.consumer.types import Field
from ecst.exceptions import ConfigError

EVENT = ChangeEvent(op="u", table="users", key={"id": 1},
                    after={"id": 1, "email": "a@b", "full_name": "Ann", "secret": "x"}, position=5,
                    topic="t", partition=0, offset=0,
                    fields=(Field("id", "int64"), Field("email", "string"), Field("full_name", "string"),
                            Field("secret", "string")),
                    key_fields=(Field("id", "int64"),))


def test_without_mapping_the_event_is_mirrored():
    assert map_event(EVENT, TopicMapping("t")) is EVENT


def test_projection_and_renames():
    m = TopicMapping("t", table="people", columns={"id": "user_id", "full_name": "name"})
    e = map_event(EVENT, m)
    assert (e.table, e.key, e.after) == ("people", {"user_id": 1}, {"user_id": 1, "name": "Ann"})
    assert [f.name for f in e.fields] == ["user_id", "name"]
    assert [f.name for f in e.key_fields] == ["user_id"]


def test_key_override_takes_values_from_the_row():
    e = map_event(EVENT, TopicMapping("t", key=("email",), columns={"email": "email", "full_name": "n"}))
    assert e.key == {"email": "a@b"} and e.after == {"email": "a@b", "n": "Ann"}


def test_a_key_column_the_records_lack_is_a_config_error_naming_topic_and_column():
    with pytest.raises(ConfigError, match=r"^topic t: key column 'account' \(topics\[\]\.key\) is not in its "
                       r"records \(they have id, email, full_name, secret\): fix the consumer config$"):
        map_event(EVENT, TopicMapping("t", key=("account",)))


def test_a_delete_takes_the_mapped_key_from_its_record_key_only():
    delete = ChangeEvent(op="d", table="users", key={"id": 1}, after=None, position=6, topic="t",
                         partition=0, offset=1, before={"id": 1, "email": ""})  # as Debezium sends it
    with pytest.raises(ConfigError, match="is not in the key of its delete records \\(id\\)"):
        check_mapping(delete, TopicMapping("t", key=("email",)))
    check_mapping(delete, TopicMapping("t", key=("id",), columns={"id": "id", "nope": "x"}))  # no row


def test_check_mapping_names_a_mapped_column_the_records_lack():
    check_mapping(EVENT, TopicMapping("t"))  # a mirror always fits
    check_mapping(EVENT, TopicMapping("t", key=("email",), columns={"email": "e", "secret": "s"}))
    with pytest.raises(ConfigError, match=r"column 'emial' \(topics\[\]\.columns\) is not in its records"):
        check_mapping(EVENT, TopicMapping("t", columns={"id": "id", "emial": "email"}))
