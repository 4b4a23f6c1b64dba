"""Waiting for the change topics to exist (pure: the looks and the delays are fakes)."""

import logging
import threading

import pytest

from ecst.consumer import topicwait
from ecst.consumer.topicwait import MAX_DELAY_S, QUICK_LOOKS_S, wait_for_topics, waiting_reason
from ecst.exceptions import StackError

QUICK = int(QUICK_LOOKS_S / 0.5)  # looks half a second apart, at first


class Looks:
    """`find()` answering "missing" `misses` times, then the partitions; records every delay spent."""

    def __init__(self, misses, stop=None, stop_after=None):
        self.misses = misses
        self.looks = 0
        self.delays = []
        self.told = []
        self.stop = stop
        self.stop_after = stop_after

    def find(self):
        self.looks += 1
        if self.looks <= self.misses:
            return [], ["p.public.users"]
        return [("p.public.users", 0), ("p.public.users", 1)], []

    def idle(self, seconds):
        self.delays.append(seconds)
        if self.stop is not None and len(self.delays) == self.stop_after:
            self.stop.set()


def test_looks_every_half_second_at_first_then_with_doubling_delays_capped():
    looks = Looks(misses=QUICK + 9)
    parts = wait_for_topics(looks.find, stop=threading.Event(), idle=looks.idle, on_missing=looks.told.append)
    assert parts == [("p.public.users", 0), ("p.public.users", 1)]
    assert looks.delays == [0.5] * QUICK + [1.0, 2.0, 4.0, 8.0, MAX_DELAY_S, MAX_DELAY_S, MAX_DELAY_S,
                                            MAX_DELAY_S, MAX_DELAY_S]
    # /readyz is told after every look, and told "nothing missing" at the end
    assert looks.told == [["p.public.users"]] * (QUICK + 9) + [[]]


def test_without_a_timeout_it_waits_until_stopped():
    stop = threading.Event()
    looks = Looks(misses=10**6, stop=stop, stop_after=QUICK + 50)
    assert wait_for_topics(looks.find, stop=stop, idle=looks.idle, timeout_s=None) is None
    assert looks.looks == QUICK + 50 and max(looks.delays) == MAX_DELAY_S


def test_topics_that_exist_are_returned_at_once_without_a_delay():
    looks = Looks(misses=0)
    assert wait_for_topics(looks.find, stop=threading.Event(), idle=looks.idle) == looks.find()[0]
    assert looks.delays == []


def test_with_a_timeout_it_gives_up_with_one_line_naming_the_topic():
    looks = Looks(misses=10**6)
    with pytest.raises(StackError, match=r"^topic\(s\) p.public.users do not exist after 0 s: is the "
                       r"connector running\? \(`ecst connectors status`\)$"):
        wait_for_topics(looks.find, stop=threading.Event(), idle=looks.idle, timeout_s=0)


def test_the_first_look_warns_then_a_line_every_ten_seconds_and_one_at_the_end(caplog):
    looks = Looks(misses=QUICK + 3)  # 30 s of looks half a second apart, then 1 s and 2 s
    with caplog.at_level(logging.INFO, logger=topicwait.__name__):
        wait_for_topics(looks.find, stop=threading.Event(), idle=looks.idle)
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels == [("WARNING", "topic(s) p.public.users do not exist yet"),
                      ("INFO", "still waiting for topic(s) p.public.users (look 21, 10 s; next in 0.5 s)"),
                      ("INFO", "still waiting for topic(s) p.public.users (look 41, 20 s; next in 0.5 s)"),
                      ("INFO", "still waiting for topic(s) p.public.users (look 61, 30 s; next in 1.0 s)"),
                      ("WARNING", "every topic exists now (look 64)")]


def test_the_readiness_reason_names_the_topics():
    assert waiting_reason(["a"]) == "waiting for topic a"
    assert waiting_reason(["a", "b"]) == "waiting for topics a, b"
