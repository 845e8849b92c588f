"""The failure record of a launched group: of several processes failing at once, exactly one is the cause."""

from __future__ import annotations

import multiprocessing
import os
import time

from trellis.parallel.failures import SETTLE_SECONDS, FailureRecord, describe_exit

RACERS = 6


def _race(path: str, who: int, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    start.wait()
    results.put((who, FailureRecord(path).claim(f"rank {who}", f"rank {who} failed")))


def test_of_processes_claiming_at_the_same_moment_exactly_one_is_the_cause() -> None:
    record = FailureRecord.create()
    assert not os.path.exists(record.path)  # nothing is written until a rank fails
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(RACERS), context.Queue()
    racers = [context.Process(target=_race, args=(record.path, who, start, results)) for who in range(RACERS)]
    for racer in racers:
        racer.start()
    outcomes = dict(results.get(timeout=60) for _ in racers)
    for racer in racers:
        racer.join()
    winners = [who for who, won in outcomes.items() if won]
    assert len(winners) == 1
    assert record.cause() == f"rank {winners[0]}" and record.summary() == f"rank {winners[0]} failed"
    record.remove()


def test_a_later_failure_defers_to_the_cause_and_the_cause_keeps_its_claim() -> None:
    record = FailureRecord.create()
    assert record.claim("rank 1", "local rank 1 (pid 7) was killed by SIGKILL")
    started = time.monotonic()
    assert not record.settle_and_claim("rank 0", "rank 0 failed")
    assert time.monotonic() - started < SETTLE_SECONDS  # a claim already there ends the wait at once
    assert record.claim("rank 1", "again")
    assert record.summary() == "local rank 1 (pid 7) was killed by SIGKILL"
    record.remove()
    assert not os.path.exists(record.path)


def test_exit_codes_are_described_as_people_say_them() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "was killed by SIGKILL"
