"""The inbox watcher: an event trigger behind an AssetWatcher.

It notices new, stable files in every inbox, claims each atomically (rename into the processing
area) and emits one event per batch. Events can be merged or lost upstream (apache/airflow#56050),
so an event is only a wake-up: the consuming DAG sweeps the claimed area idempotently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class InboxTrigger(BaseEventTrigger):
    def __init__(self, *, inbox_root: str, work_dir: str, poll_interval: float = 1.0, min_age: float = 2.0):
        super().__init__()
        self.inbox_root = inbox_root
        self.work_dir = work_dir
        self.poll_interval = poll_interval
        self.min_age = min_age

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "demat_airflow.triggers.InboxTrigger",
            {
                "inbox_root": self.inbox_root,
                "work_dir": self.work_dir,
                "poll_interval": self.poll_interval,
                "min_age": self.min_age,
            },
        )

    def _poll(self, seen: dict[Path, tuple[int, float]]) -> list[str]:
        from flows.pipeline import inbox

        claimed: list[str] = []
        current: dict[Path, tuple[int, float]] = {}
        for item in inbox.scan(Path(self.inbox_root)):
            previous = seen.get(item.path)
            current[item.path] = (item.size, item.mtime)
            if inbox.is_stable(item, min_age=self.min_age, previous=previous):
                target = inbox.claim(item, Path(self.work_dir))
                if target is not None:
                    claimed.append(str(target))
                    current.pop(item.path, None)
        seen.clear()
        seen.update(current)
        return claimed

    async def run(self) -> AsyncIterator[TriggerEvent]:
        seen: dict[Path, tuple[int, float]] = {}
        while True:
            try:
                claimed = await asyncio.to_thread(self._poll, seen)
            except OSError as exc:  # a vanished folder must not kill the watcher
                self.log.warning("Inbox scan failed: %s", exc)
                claimed = []
            if claimed:
                self.log.info("Claimed %d file(s)", len(claimed))
                yield TriggerEvent({"claimed": claimed})
            await asyncio.sleep(self.poll_interval)
