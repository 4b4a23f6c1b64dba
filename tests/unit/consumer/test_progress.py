"""The progress line of a rebuild: a bar when the total is known, the rate, the ETA."""

import time

from ecst.consumer.progress import Progress


def test_progress_reads_with_and_without_a_known_total():
    p = Progress(50, 200, time.monotonic() - 10, "rows")
    assert p.line().startswith("[#######-----------------------] 50/200 rows (25%), 5/s, ETA 30 s")
    unknown = Progress(50, 0, time.monotonic() - 10, "rows")
    assert unknown.line() == "50 rows applied (total unknown), 5/s" and unknown.eta_s is None
    beyond = Progress(250, 200, time.monotonic() - 10, "rows")  # the total was the planner's estimate
    assert beyond.line().endswith("] 250 rows (estimate was 200), 25/s") and beyond.eta_s == 0


def test_the_final_progress_line_is_full_and_says_whether_the_total_was_exact():
    replayed = Progress(2320, 2320, time.monotonic() - 10, "offsets", finished=True)
    assert replayed.line() == f"[{'#' * 30}] 2,320/2,320 offsets (100%), 232/s"  # no ETA: it ended
    short = Progress(2990, 3000, time.monotonic() - 10, "rows", finished=True)  # estimate too high
    assert short.line() == f"[{'#' * 30}] 2,990 rows (estimate was 3,000), 299/s"
