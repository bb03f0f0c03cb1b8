"""scoring_runtime/heap.py: frozen startup objects, and garbage made later still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from scoring_runtime.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


def cycle() -> weakref.ref[Node]:
    """Two nodes that point at each other: only the cycle collector can free them."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


@pytest.mark.usefixtures("unfrozen_afterwards")
def test_startup_objects_are_frozen_and_later_cycles_are_still_collected() -> None:
    kept = Node()  # alive at startup, like a loaded model
    tracked = len(gc.get_objects())
    freeze_startup_heap()
    assert gc.get_freeze_count() >= tracked // 2
    # Collections no longer see it (get_objects lists the generations they walk).
    assert all(found is not kept for found in gc.get_objects())

    garbage = cycle()
    assert garbage() is not None
    gc.collect()
    assert garbage() is None


@pytest.mark.usefixtures("unfrozen_afterwards")
def test_garbage_from_startup_is_collected_before_freezing() -> None:
    leftover = cycle()  # e.g. a cycle init() dropped
    freeze_startup_heap()
    assert leftover() is None
