"""read_ahead: the items in order, from a background thread; errors where they occurred; an early
stop ends the thread and closes the source. Scratch: recycled read memory."""

from __future__ import annotations

import threading

import pytest
import torch

from rgemma.io.tensor_reader import Scratch, read_ahead


def test_items_come_in_order_from_another_thread():
    threads = []

    def source():
        for i in range(20):
            threads.append(threading.current_thread())
            yield i

    assert list(read_ahead(source())) == list(range(20))
    assert threading.current_thread() not in threads


def test_an_error_is_raised_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("truncated")

    got = []
    with pytest.raises(ValueError, match="truncated"):
        for item in read_ahead(source()):
            got.append(item)
    assert got == [1, 2]


def test_stopping_early_ends_the_thread_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from range(1000)
        finally:
            closed.set()

    before = threading.active_count()
    items = read_ahead(source())
    assert next(items) == 0
    items.close()
    assert closed.is_set() and threading.active_count() == before


def test_scratch_recycles_the_smallest_buffer_that_fits_and_keeps_a_few():
    scratch = Scratch(keep=2)
    big, small = scratch.get(torch.bfloat16, (64, 8)), scratch.get(torch.float32, (4, 4))
    assert big.shape == (64, 8) and big.dtype == torch.bfloat16
    big_at, small_at = big.data_ptr(), small.data_ptr()
    scratch.give(big)
    scratch.give(small)
    scratch.give(torch.empty(3))  # not from get: ignored
    assert scratch.get(torch.int8, (10,)).data_ptr() == small_at  # 16 bytes fit in 64
    again = scratch.get(torch.float32, (2, 64))
    assert again.data_ptr() == big_at and again.shape == (2, 64)
    assert scratch.get(torch.float32, (1000,)).data_ptr() not in (big_at, small_at)
    for t in [scratch.get(torch.float32, (n,)) for n in (1, 2, 3)]:
        scratch.give(t)
    assert len(scratch._free) == 2 and sorted(b.numel() for b in scratch._free) == [8, 12]
