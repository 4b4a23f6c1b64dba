"""`ecst consume` says why a topic yielded nothing."""

from ecst.cli.consume import why_nothing
from ecst.consumer.runner import RunStats


def test_a_line_for_each_topic_that_yielded_nothing_saying_why():
    stats = RunStats(by_topic={"p.public.users": 12}, empty_at_start={"p.public.history"})
    lines = why_nothing(["p.public.users", "p.public.history", "p.public.orders"], stats)
    assert len(lines) == 2
    assert lines[0].startswith("Warning: topic p.public.history holds no records, so nothing was applied")
    assert "`ecst connectors status <connector>`" in lines[0] and "FAILED" in lines[0]
    assert lines[1] == "topic p.public.orders: no new records after the offsets stored in the state"
