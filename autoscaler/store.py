"""DecisionStore: the latest decision per workload, shared by the loop, the HTTP API and KEDA.

Thread-safe (the loop runs in a worker thread; gRPC in its own thread pool; FastAPI in the
event loop). Readers that wait for change (KEDA's StreamIsActive) use `wait_for_change`,
which wakes on every `put_many` and returns the new version number.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from autoscaler.config import WorkloadKey
from autoscaler.protocols import DecisionRecord


class DecisionStore:
    def __init__(self) -> None:
        self._records: dict[WorkloadKey, DecisionRecord] = {}
        self._cond = threading.Condition()
        self._version = 0

    def put_many(self, records: Iterable[DecisionRecord]) -> int:
        with self._cond:
            for r in records:
                self._records[r.key] = r
            self._version += 1
            self._cond.notify_all()
            return self._version

    def put(self, record: DecisionRecord) -> int:
        return self.put_many([record])

    def remove(self, keys: Iterable[WorkloadKey]) -> None:
        with self._cond:
            for k in keys:
                self._records.pop(k, None)
            self._version += 1
            self._cond.notify_all()

    def get(self, key: str) -> DecisionRecord | None:
        with self._cond:
            return self._records.get(WorkloadKey(key))

    def all(self) -> list[DecisionRecord]:
        with self._cond:
            return sorted(self._records.values(), key=lambda r: r.key)

    def keys(self) -> list[WorkloadKey]:
        with self._cond:
            return sorted(self._records)

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def wait_for_change(self, since_version: int, timeout_s: float) -> int:
        """Block until the version exceeds `since_version` or the timeout passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > since_version, timeout=timeout_s)
            return self._version
