from __future__ import annotations

import threading
import time

import pytest

from vidpipe.media.threads import Consumer, Producer


def test_producer_yields_in_order_and_reraises_after_items():
    def work(emit):
        for i in range(5):
            emit(i)
        raise ValueError("boom")

    got = []
    with Producer("p", work, maxsize=2) as p, pytest.raises(ValueError, match="boom"):
        for x in p:
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_producer_is_bounded_and_close_joins_a_blocked_worker():
    emitted = []

    def work(emit):
        for i in range(1000):
            emit(i)
            emitted.append(i)

    p = Producer("p", work, maxsize=3)
    it = iter(p)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(emitted) <= 3 + 2  # queue bound + one in hand, never the whole stream
    p.close()
    assert not any(t.name == "p" and t.is_alive() for t in threading.enumerate())


def test_consumer_returns_result_and_surfaces_worker_error_on_put():
    c = Consumer("c", lambda items: sum(items), maxsize=2)
    for i in range(10):
        c.put(i)
    assert c.finish() == 45

    def failing(items):
        for x in items:
            if x == 3:
                raise RuntimeError("encoder died")

    c2 = Consumer("c2", failing, maxsize=1)
    with pytest.raises(RuntimeError, match="encoder died"):
        for i in range(100):
            c2.put(i)
            time.sleep(0.01)
    with pytest.raises(RuntimeError, match="encoder died"):
        c2.finish()


def test_consumer_cancel_joins():
    c = Consumer("c3", lambda items: [time.sleep(0.01) for _ in items], maxsize=2)
    c.put(1)
    c.cancel()
    assert not any(t.name == "c3" and t.is_alive() for t in threading.enumerate())
