"""Waiting for the change topics to exist before the consumer starts: a look every half second at
first, then with capped backoff; a log line every ten seconds, and the reason /readyz gives meanwhile.

A service started before its connector (a compose file, a Helm release, a cluster restored in any
order) waits for as long as it takes, until it is stopped: the topic appears once the connector is
applied and its snapshot begins. A one-shot run (`--until-ready`, `--until-caught-up`, a rebuild)
gives up after a timeout instead, with one line saying what to check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ecst.consumer.outage import Backoff
from ecst.exceptions import StackError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY_S = 0.5
# Looks every FIRST_DELAY_S for this long: a connector applied meanwhile creates its topic seconds later
# (when its snapshot starts), and a bootstrap should not wait out a doubled delay (with delays doubling
# from the start, a topic created 4 s in was seen at 7.5 s). A look is one metadata request.
QUICK_LOOKS_S = 30.0
MAX_DELAY_S = 10.0  # the cap afterwards: a topic is noticed at most this long after it is created
REMIND_EVERY_S = 10.0  # an INFO line this often while the wait lasts


def waiting_reason(missing: list[str]) -> str:
    """What /readyz says while `missing` topics do not exist."""
    return f"waiting for topic{'s' if len(missing) > 1 else ''} {', '.join(missing)}"


def wait_for_topics(find: Callable[[], tuple[list[T], list[str]]], *, stop: threading.Event,
                    idle: Callable[[float], None], timeout_s: float | None = None,
                    on_missing: Callable[[list[str]], None] | None = None,
                    backoff: Backoff | None = None) -> list[T] | None:
    """Call `find()` (the partitions of the topics that exist, the names of those that do not)
    until no topic is missing, spending FIRST_DELAY_S between looks for QUICK_LOOKS_S, then a delay
    that doubles up to MAX_DELAY_S (`backoff`), in `idle(seconds)`. `on_missing(missing)` is told
    after every look (an empty list once all exist).

    Returns the partitions; None once `stop` is set. With `timeout_s`, a StackError names the
    missing topics once that many seconds have passed; None waits until stopped."""
    backoff = backoff or Backoff(2 * FIRST_DELAY_S, MAX_DELAY_S)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    attempts = 0
    waited = reminded = 0.0  # the seconds spent waiting, in total and at the last INFO line
    while not stop.is_set():
        partitions, missing = find()
        if on_missing is not None:
            on_missing(missing)
        if not missing:
            if attempts:
                log.warning("every topic exists now (look %d): starting", attempts + 1)
            return partitions
        if deadline is not None and time.monotonic() >= deadline:
            raise StackError(f"topic(s) {', '.join(missing)} do not exist after {timeout_s:.0f} s: "
                             "is the connector running? (`ecst connectors status`)")
        attempts += 1
        delay = FIRST_DELAY_S if waited < QUICK_LOOKS_S else backoff.next()
        if attempts == 1:
            log.warning("topic(s) %s do not exist yet: waiting for them (a look every %.1f s for %.0f s, "
                        "then every %.0f s at most); /readyz answers 503 meanwhile. Is the connector applied "
                        "and running? (`ecst connectors status`)", ", ".join(missing), delay, QUICK_LOOKS_S,
                        backoff.cap)
        elif waited - reminded >= REMIND_EVERY_S:
            reminded = waited
            log.info("still waiting for topic(s) %s (look %d, %.0f s; next in %.1f s)", ", ".join(missing),
                     attempts, waited, delay)
        idle(delay)
        waited += delay
    return None

