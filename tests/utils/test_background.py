"""The loggers' shared background delivery: order kept through failures, every wait bounded, nothing silently
lost. The backend here is a function that a test makes fail or hang, as a full disk or a dead server would."""

from __future__ import annotations

import json
import threading
import time

import pytest

from trellis.utils.background import BackgroundDelivery


class Backend:
    """Records what it was given; fails while `failing`, blocks while `hung` is cleared."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.failing = False
        self.hung = threading.Event()
        self.hung.set()

    def deliver(self, items: list[dict]) -> None:
        self.hung.wait()
        if self.failing:
            raise OSError(28, "No space left on device")
        self.received += items


def rows(count: int, start: int = 1) -> list[dict]:
    return [{"step": step, "metrics": {"loss": float(step)}} for step in range(start, start + count)]


@pytest.fixture
def backend() -> Backend:
    return Backend()


def test_items_arrive_in_order_through_a_failure_with_one_warning(backend, tmp_path):
    delivery = BackgroundDelivery("disk", backend.deliver, lambda: str(tmp_path / "spill.jsonl"), interval=0.01,
                                  retry_interval=0.01, chunk_size=3)
    backend.failing = True
    failure = r"disk failed \(OSError.*No space left on device\)\. Training goes on"
    with pytest.warns(UserWarning, match=failure) as warned:
        for item in rows(5):
            delivery.put(item)
        assert not delivery.flush(10)  # returns after the failed attempt, not after 10 s
        for item in rows(5, start=6):
            delivery.put(item)
        assert not delivery.flush(10)
    assert len(warned) == 1
    backend.failing = False
    assert delivery.flush(10)
    assert [item["step"] for item in backend.received] == list(range(1, 11))
    delivery.close(1)
    assert not (tmp_path / "spill.jsonl").exists()


def test_close_waits_at_most_its_timeout_and_spills_what_is_left_saying_what_it_is(backend, tmp_path):
    spill = tmp_path / "spill.jsonl"
    delivery = BackgroundDelivery("server", backend.deliver, lambda: str(spill), interval=0.01, chunk_size=2)
    backend.hung.clear()  # a request that never returns
    for item in [*rows(3), {"kind": "params", "params": {"lr": "0.1"}}]:
        delivery.put(item)
    started = time.monotonic()
    with pytest.warns(UserWarning) as warned:
        delivery.close(0.5)
    assert time.monotonic() - started < 5
    [message] = [str(warning.message) for warning in warned]
    assert "3 metric row(s) for steps 1..3 (loss) and 1 params item(s)" in message
    assert "the first 2 were still being sent and may also have arrived" in message and str(spill) in message
    assert [json.loads(line) for line in spill.read_text().splitlines()] == [*rows(3), {"kind": "params",
                                                                                        "params": {"lr": "0.1"}}]
    backend.hung.set()
    time.sleep(0.2)
    assert backend.received == [] or backend.received == rows(2)  # the abandoned request may still land; no more


def test_a_flush_does_not_wait_again_for_an_attempt_that_is_already_stuck(backend, tmp_path):
    delivery = BackgroundDelivery("server", backend.deliver, lambda: str(tmp_path / "spill.jsonl"), interval=0.01)
    backend.hung.clear()
    delivery.put(rows(1)[0])
    assert not delivery.flush(0.3)
    started = time.monotonic()
    assert not delivery.flush(0.3)
    assert time.monotonic() - started < 0.1
    backend.hung.set()
    assert delivery.flush(10)
    delivery.close(1)


@pytest.mark.filterwarnings("ignore:disk failed:UserWarning")
def test_memory_stays_bounded_while_the_backend_fails(backend, tmp_path):
    spill = tmp_path / "spill.jsonl"
    delivery = BackgroundDelivery("disk", backend.deliver, lambda: str(spill), interval=0.01, retry_interval=0.01,
                                  max_pending=10)
    backend.failing = True
    with pytest.warns(UserWarning, match="were the oldest of more than 10 items waiting while it failed"):
        for item in rows(30):
            delivery.put(item)
        deadline = time.monotonic() + 10
        while not spill.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(delivery) <= 10
    spilled = [json.loads(line)["step"] for line in spill.read_text().splitlines()]
    assert spilled == list(range(1, len(spilled) + 1))  # the oldest, in order
    backend.failing = False
    assert delivery.flush(10)
    assert [item["step"] for item in backend.received] == list(range(len(spilled) + 1, 31))
    delivery.close(1)


def test_a_closed_delivery_starts_again_on_the_next_put(backend, tmp_path):
    delivery = BackgroundDelivery("disk", backend.deliver, lambda: str(tmp_path / "spill.jsonl"), interval=0.01)
    delivery.put(rows(1)[0])
    delivery.close(5)
    delivery.put(rows(1, start=2)[0])
    assert delivery.flush(5)
    assert [item["step"] for item in backend.received] == [1, 2]
    delivery.close(5)
