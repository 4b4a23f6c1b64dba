"""`--where` conditions: one SQL condition is sent on to Debezium, anything that could end or
reshape Debezium's query, or call a function with effects, is refused with a one-line reason."""

import pytest

from ecst.connectors.conditions import check_condition, refused_function
from ecst.exceptions import ConfigError


@pytest.mark.parametrize("condition", [
    "id <= 1000",
    "country = 'DE' OR country = 'FR'",
    "full_name = 'O''Brien; --not a comment /* nor this */'",  # quotes and doubled quotes
    '"weird; name" IS NOT NULL AND "say ""hi""" = 1',  # quoted identifiers
    "created_at > now() - interval '7 days' AND lower(email) LIKE '%@example.com'",
    "id IN (SELECT user_id FROM orders WHERE total > 10)",  # reads only; Debezium checks the grants
    "balance::numeric(12,2) > 10.5 AND tags @> ARRAY['a'] AND id % 5 = 0",
    "E'tab' IS NOT NULL AND a$b = 1",  # a prefixed string; $ inside an identifier
    "sleepy_pg_sleep = 1 AND pg_sleep_column > 0",  # names, not calls
])
def test_one_condition_is_accepted_unchanged(condition):
    assert check_condition(f"  {condition}\n") == condition


@pytest.mark.parametrize(("condition", "reason"), [
    ("1=1; COMMIT; DROP TABLE users", "must be one SQL condition"),
    ("id <= 10;", "must be one SQL condition"),
    ("id <= 10 -- the rest of Debezium's query", "may not contain comments"),
    ("id <= 10 /* */", "may not contain comments"),
    ("id <= 10--", "may not contain comments"),
    ("pg_sleep(5) IS NOT NULL", "calls pg_sleep()"),
    ("id < 3 AND PG_SLEEP (1) IS NULL", "calls pg_sleep()"),  # folded, spaced
    ('pg_catalog."pg_sleep"(1) IS NULL', "calls pg_sleep()"),  # quoted and qualified
    ("pg_logical_slot_get_changes('ecst_users', NULL, NULL) IS NULL", "calls pg_logical_slot_get_changes()"),
    ("pg_advisory_lock(1) IS NULL", "calls pg_advisory_lock()"),
    ("query_to_xml('select 1', true, true, '') IS NULL", "calls query_to_xml()"),
    ("id <= 10) OR (1=1", "unbalanced parentheses (character 9"),
    ("(id <= 10", "1 opened, never closed"),
    ("id <= $$10$$", "dollar quoting"),
    ("id = $1", "dollar quoting"),
    ("email = 'a\\'; DROP TABLE x; --'", "backslash"),
    ("email = 'open", "unterminated string"),
    ('"open = 1', "unterminated quoted identifier"),
    ("   ", "is empty"),
    ("id = 1\x00", "NUL"),
    ("id IN (" + ",".join(str(n) for n in range(600)) + ")", "over 1,500: the signal that carries it"),
])
def test_what_could_escape_or_harm_is_refused_with_its_reason(condition, reason):
    with pytest.raises(ConfigError, match="^--where ") as exc:
        check_condition(condition)
    assert reason in str(exc.value) and "\n" not in str(exc.value)


def test_refused_functions_are_matched_by_name_and_family():
    assert refused_function("pg_sleep") and refused_function("pg_try_advisory_xact_lock")
    assert refused_function("dblink_exec") and refused_function("lo_export")
    assert not refused_function("lower") and not refused_function("now") and not refused_function("pg_size")
