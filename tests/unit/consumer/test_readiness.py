"""Readiness, caught-up and cold-start decisions (pure)."""

import pytest

from ecst.consumer import readiness
from ecst.consumer.snapshots import SNAPSHOT_COMPLETE, SNAPSHOT_PENDING, SNAPSHOT_RUNNING, SnapshotState

DONE = SnapshotState(SNAPSHOT_COMPLETE, 10)
PENDING = SnapshotState(SNAPSHOT_PENDING, 10, {0: 5, 1: 8})


def test_snapshot_applied_needs_every_topic_complete():
    assert readiness.snapshot_applied(["a", "b"], {"a": DONE, "b": DONE})
    assert not readiness.snapshot_applied(["a", "b"], {"a": DONE})
    assert not readiness.snapshot_applied(["a"], {"a": PENDING})
    assert readiness.snapshot_applied([], {})


@pytest.mark.parametrize("policy, store_up, caught_up_once, snapshots, reason", [
    ("always", True, False, {}, None),
    ("always", False, True, {"t": DONE}, "state store unavailable"),
    ("caught-up", True, False, {"t": DONE}, "end offsets of start-up not reached yet"),
    ("caught-up", True, True, {}, None),
    ("snapshot", True, True, {"t": PENDING}, "snapshot not applied"),
    ("snapshot", True, False, {"t": DONE}, None),
    ("snapshot", False, True, {"t": DONE}, "state store unavailable"),
])
def test_not_ready_reason_by_policy(policy, store_up, caught_up_once, snapshots, reason):
    assert readiness.not_ready_reason(policy, store_up=store_up, caught_up_once=caught_up_once,
                                      topics=["t"], snapshots=snapshots) == reason


def test_empty_at_start_names_topics_without_any_record():
    beginnings = {("a", 0): 0, ("a", 1): 3, ("b", 0): 4}
    ends = {("a", 0): 0, ("a", 1): 3, ("b", 0): 9}
    assert readiness.empty_at_start(["a", "b", "c"], beginnings, ends) == {"a", "c"}


def test_caught_up_when_every_partition_with_records_reached_its_end_offset():
    targets = {("t", 0): 10, ("t", 1): 5, ("t", 2): 7}
    beginnings = {("t", 0): 0, ("t", 1): 0, ("t", 2): 7}  # partition 2 held nothing (compacted)
    assert not readiness.caught_up(targets, beginnings, {("t", 0): 10, ("t", 1): 4})
    assert readiness.caught_up(targets, beginnings, {("t", 0): 10, ("t", 1): 5})
    assert readiness.caught_up(targets, beginnings, {("t", 0): 12, ("t", 1): 6})
    assert not readiness.caught_up(targets, beginnings, {("t", 0): 10})


def test_a_pending_snapshot_is_done_once_every_partition_reached_its_target():
    states = {"t": PENDING, "u": DONE, "v": SnapshotState(SNAPSHOT_RUNNING, 3)}
    assert readiness.snapshots_done(states, {("t", 0): 5, ("t", 1): 7}) == []
    assert readiness.snapshots_done(states, {("t", 0): 5, ("t", 1): 8}) == ["t"]


def test_cold_topics_are_those_without_stored_offsets():
    stored = {("a", 0): 4}
    assert readiness.cold_topics(["a", "b"], stored) == ["b"]
    assert readiness.cold_topics(["a", "b"], stored, enabled=False) == []


def test_a_cold_start_completes_topics_that_streamed_and_waits_for_the_rest():
    complete, waiting = readiness.cold_start_outcome(
        ["marked", "streamed", "snapshot-only"], {"marked": PENDING}, streamed={"streamed", "marked"})
    assert complete == ["streamed"]  # no markers met, streamed changes: a complete copy
    assert waiting == ["snapshot-only"]  # only snapshot rows so far: wait for its markers


@pytest.mark.parametrize("policy", ["snapshot", "caught-up", "always"])
def test_a_missing_topic_is_never_ready_and_named(policy):
    done = {"t": DONE, "u": DONE}
    assert readiness.not_ready_reason(policy, store_up=True, caught_up_once=True, topics=["t", "u"],
                                      snapshots=done, missing=["u"]) == "waiting for topic u"
    assert readiness.not_ready_reason(policy, store_up=True, caught_up_once=True, topics=["t", "u"],
                                      snapshots=done, missing=["t", "u"]) == "waiting for topics t, u"
    # the state store's outage is said first: it is what the operator must fix
    assert readiness.not_ready_reason(policy, store_up=False, caught_up_once=True, topics=["t"],
                                      snapshots=done, missing=["t"]) == "state store unavailable"
