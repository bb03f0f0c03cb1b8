"""Failures a test injects into the cluster: pods that cannot be scheduled, or that crash.

A fault applies to pods matching a label selector (and optionally a namespace),
including pods created after it was added, until it is cleared.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.kube.selectors import LabelSelector

UNSCHEDULABLE = "unschedulable"
CRASH = "crash"

_ids = itertools.count(1)


@dataclass(eq=False)
class Fault:
    kind: str
    selector: LabelSelector
    namespace: str | None
    message: str
    exit_code: int = 1
    id: int = field(default_factory=lambda: next(_ids))
    _clear: Callable[[Fault], None] | None = field(default=None, repr=False)

    def matches(self, pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.selector.matches(meta.get("labels"))

    def clear(self) -> None:
        """Stop injecting this fault (pods recover on their next scheduling or restart)."""
        if self._clear is not None:
            self._clear(self)


class Faults:
    def __init__(self) -> None:
        self._active: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self._active.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        if fault in self._active:
            self._active.remove(fault)

    def clear(self) -> None:
        self._active.clear()

    def find(self, kind: str, pod: dict[str, Any]) -> Fault | None:
        for fault in self._active:
            if fault.kind == kind and fault.matches(pod):
                return fault
        return None
