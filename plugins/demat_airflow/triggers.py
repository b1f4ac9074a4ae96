"""The inbox watcher: an event trigger behind an AssetWatcher.

It claims each complete file atomically (rename into the processing area), sets aside what cannot
be taken (flows.pipeline.inbox decides) and emits one event per batch. Events can be merged or lost
upstream (apache/airflow#56050), so an event is only a wake-up: the consuming DAG sweeps the
claimed area idempotently.

Completion comes from the kernel where it can tell (inotify: IN_CLOSE_WRITE, IN_MOVED_TO), so a
closed file is claimed within a few tens of milliseconds and a writer that pauses is never cut in
half; the folders are still listed every `poll_interval` seconds for what events cannot report
(files present at start, new collectivités, network shares where only the stability rule applies).
Nothing raised while looking at the inboxes stops the watcher.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

BURST = 0.02  # after a first event, gather the rest of a burst for this long (one asset event per batch)


class _Notifier:
    """inotify watches on the flow folders (asyncinotify), turned into the intake's notes."""

    def __init__(self) -> None:
        from asyncinotify import Inotify, Mask

        self.Mask = Mask
        self.inotify = Inotify()
        self.mask = (Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.CREATE | Mask.MODIFY | Mask.DELETE | Mask.MOVED_FROM
                     | Mask.ONLYDIR)
        self.watched: dict[Path, Any] = {}

    def watch(self, dirs: list[Path]) -> list[Path]:
        """Watch every flow folder not watched yet; returns the folders newly watched."""
        added = []
        for d in dirs:
            if d in self.watched:
                continue
            try:
                self.watched[d] = self.inotify.add_watch(d, self.mask)
                added.append(d)
            except OSError:
                pass  # vanished or no more watches: that folder stays on the stability rule
        return added

    def translate(self, event) -> tuple[Path, str] | None:
        m = self.Mask
        if event.mask & m.Q_OVERFLOW:
            return (Path("/"), "overflow")
        if event.mask & m.IGNORED:
            for d, w in list(self.watched.items()):
                if w is event.watch:
                    del self.watched[d]
            return None
        path = event.path
        if path is None or event.name is None:
            return None
        if event.mask & (m.CLOSE_WRITE | m.MOVED_TO):
            return (path, "closed")
        if event.mask & (m.CREATE | m.MODIFY):
            return (path, "writing")
        if event.mask & (m.DELETE | m.MOVED_FROM):
            return (path, "gone")
        return None

    def start(self) -> None:
        """Read events in a task of its own into a queue: waiting on the queue may time out safely,
        while a timed-out read of the inotify descriptor could drop the events it had just read."""
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pump = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            event = await self.inotify.get()
            self.queue.put_nowait(event)

    async def wait(self, timeout: float) -> list[tuple[Path, str]]:
        """The notes of the next burst of events, or [] after `timeout` seconds without any."""
        notes: list[tuple[Path, str]] = []
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            if self.pump.done():  # the reader died: say so, the stability rule takes over
                raise RuntimeError("inotify reader stopped") from self.pump.exception()
            return notes
        await asyncio.sleep(BURST)  # the rest of a burst (a batch dropped at once): one asset event
        while True:
            note = self.translate(event)
            if note is not None:
                notes.append(note)
            try:
                event = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return notes

    def close(self) -> None:
        pump = getattr(self, "pump", None)
        if pump is not None:
            pump.cancel()
        self.inotify.close()


class InboxTrigger(BaseEventTrigger):
    def __init__(self, *, inbox_root: str, work_dir: str, poll_interval: float = 1.0, min_age: float = 2.0,
                 events: str | None = None, abandon_age: float | None = None):
        super().__init__()
        self.inbox_root = inbox_root
        self.work_dir = work_dir
        self.poll_interval = poll_interval
        self.min_age = min_age
        self.events = events  # "auto" (None: DEMAT_INBOX_EVENTS), "inotify" or "poll"
        self.abandon_age = abandon_age

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "inbox_root": self.inbox_root,
            "work_dir": self.work_dir,
            "poll_interval": self.poll_interval,
            "min_age": self.min_age,
        }
        if self.events is not None:
            kwargs["events"] = self.events
        if self.abandon_age is not None:
            kwargs["abandon_age"] = self.abandon_age
        return ("demat_airflow.triggers.InboxTrigger", kwargs)

    def _intake(self):
        from flows.pipeline import inbox

        mode = self.events if self.events is not None else os.environ.get("DEMAT_INBOX_EVENTS", "auto")
        events = inbox.events_wanted(Path(self.inbox_root), mode)
        abandon = self.abandon_age if self.abandon_age is not None else inbox.ABANDON_AGE
        return inbox.Intake(Path(self.inbox_root), Path(self.work_dir), min_age=self.min_age, events=events,
                            abandon_age=abandon)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        intake = self._intake()
        notifier: _Notifier | None = None
        if intake.events:
            try:
                notifier = _Notifier()
            except (OSError, ImportError) as exc:  # no inotify here: the stability rule alone
                self.log.warning("Événements du système de fichiers indisponibles (%s) : règle de stabilité "
                                 "(%.1f s) seule", exc, self.min_age)
                intake.events = False
        self.log.info("Surveillance des dossiers d'entrée : %s", "événements inotify" if intake.events else
                      f"stabilité {self.min_age:g} s")
        notes: list[tuple[Path, str]] = []
        try:
            if notifier is not None:  # watch first, then look: nothing written meanwhile goes unseen
                from flows.pipeline import inbox

                notifier.watch([d for _, _, d in await asyncio.to_thread(inbox.flow_dirs, Path(self.inbox_root))])
                notifier.start()
            while True:
                if any(what == "overflow" for _, what in notes):
                    intake.forget_events()
                    notes = [n for n in notes if n[1] != "overflow"]
                try:
                    outcome = await asyncio.to_thread(intake.step, notes)
                except Exception:  # a bad day on the disk must not kill the watcher
                    self.log.exception("Lecture des dossiers d'entrée impossible ; nouvel essai")
                    outcome = None
                notes = []
                rescan = False
                if outcome is not None:
                    if notifier is not None and notifier.watch(outcome.dirs):
                        rescan = True  # a new folder: look again at once, now that it is watched
                    if outcome.claimed:
                        self.log.info("%d fichier(s) pris en charge : %s", len(outcome.claimed),
                                      ", ".join(outcome.shown[:20]))
                        yield TriggerEvent({"claimed": outcome.shown})
                if rescan:
                    continue
                if notifier is not None:
                    try:
                        notes = await notifier.wait(self.poll_interval)
                    except RuntimeError as exc:
                        self.log.warning("Événements du système de fichiers perdus (%s) : règle de stabilité seule",
                                         exc)
                        notifier.close()
                        notifier, intake.events = None, False
                        intake.forget_events()
                else:
                    await asyncio.sleep(self.poll_interval)
        finally:
            if notifier is not None:
                notifier.close()
