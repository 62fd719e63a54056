"""Function logs: every line a replica writes (and the provider's events about it), kept per function.

Lines are held in a bounded buffer per function and appended to ``<run_dir>/logs/<name>.log``; readers
get them as ``LogMessage`` records, optionally following new lines as they arrive. A follower that waits
gets a ``None`` about once a ``heartbeat``, so the HTTP layer can write something and learn that its client
has gone. A deleted function's buffer and open file are dropped a grace period after it is retired.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from datetime import datetime, timezone
from typing import IO, Iterator

from provider.types import LogMessage

PROVIDER_INSTANCE = "provider"
HEARTBEAT_SECONDS = 1.0


class LogStore:
    """Thread-safe per-function log buffers with follow."""

    def __init__(self, namespace: str, folder: str = "", max_lines: int = 10000) -> None:
        self.namespace = namespace
        self.folder = folder
        self.max_lines = max_lines
        self._cond = threading.Condition()
        self._lines: dict[str, collections.deque[tuple[int, LogMessage]]] = {}
        self._files: dict[str, IO[str]] = {}
        self._retiring: dict[str, float] = {}  # name -> monotonic time its buffer and file are dropped
        self._seq = 0
        self.closed = False
        if folder:
            os.makedirs(folder, exist_ok=True)

    def append(self, name: str, instance: str, text: str) -> None:
        """Record one line of ``name``'s replica ``instance``."""
        message = LogMessage(name, self.namespace, instance, datetime.now(timezone.utc), text.rstrip("\r\n"))
        with self._cond:
            self._seq += 1
            lines = self._lines.setdefault(name, collections.deque(maxlen=self.max_lines))
            lines.append((self._seq, message))
            out = self._file(name)
            if out is not None:
                out.write(f"{message.timestamp.isoformat()} {instance} {message.text}\n")
                out.flush()
            self._cond.notify_all()

    def event(self, name: str, text: str) -> None:
        """Record a line from the provider itself about ``name`` (start, crash, memory, restart)."""
        self.append(name, PROVIDER_INSTANCE, text)

    def has(self, name: str) -> bool:
        """Whether any line of ``name`` is kept."""
        with self._cond:
            return bool(self._lines.get(name))

    def read(self, name: str, tail: int = -1, since: datetime | None = None, follow: bool = False,
             instance: str = "", alive=lambda: True,
             heartbeat: float = 0.0) -> Iterator[LogMessage | None]:
        """Kept lines (the last ``tail`` when >= 0, those after ``since``), then new ones while ``follow``;
        with ``heartbeat`` > 0 a follower also gets ``None`` after each ``heartbeat`` seconds without a line.
        A follow ends when ``alive()`` turns false, at shutdown, or when ``name``'s logs are dropped."""
        with self._cond:
            buffer = self._lines.get(name)
            everything = list(buffer or ())
        last = everything[-1][0] if everything else 0
        kept = [(s, m) for s, m in everything if _wanted(m, since, instance)]
        if tail >= 0:
            kept = kept[len(kept) - tail:] if tail else []
        for _, message in kept:
            yield message
        quiet_since = time.monotonic()
        while follow and alive() and not self.closed:
            with self._cond:
                self._cond.wait(min(0.5, heartbeat) if heartbeat > 0 else 0.5)
                current = self._lines.get(name)
                if buffer is not None and current is not buffer:
                    return  # forgotten (deleted and past its retention)
                buffer = current
                fresh = [(s, m) for s, m in (current or ()) if s > last]
            for seq, message in fresh:
                last = seq
                if _wanted(message, since, instance):
                    quiet_since = time.monotonic()
                    yield message
            if heartbeat > 0 and time.monotonic() - quiet_since >= heartbeat:
                quiet_since = time.monotonic()
                yield None

    def retire(self, name: str, grace: float, now: float) -> None:
        """``name`` was deleted: drop its buffer and close its file at ``now + grace`` unless ``keep`` comes first."""
        with self._cond:
            if name in self._lines or name in self._files:
                self._retiring[name] = now + grace

    def keep(self, name: str) -> None:
        """``name`` is deployed again: its logs are no longer due to be dropped."""
        with self._cond:
            self._retiring.pop(name, None)

    def sweep(self, now: float) -> list[str]:
        """Drop the retired functions whose grace period is over; returns their names."""
        with self._cond:
            due = [name for name, at in self._retiring.items() if at <= now]
            for name in due:
                del self._retiring[name]
                self._lines.pop(name, None)
                out = self._files.pop(name, None)
                if out is not None:
                    out.close()
            if due:
                self._cond.notify_all()  # their followers end
            return due

    def end_follows(self) -> None:
        """Wake followers and end their streams (shutdown); lines are still recorded."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def close(self) -> None:
        """End follows and close the files."""
        with self._cond:
            self.end_follows()
            for f in self._files.values():
                f.close()
            self._files.clear()
            self.folder = ""

    def _file(self, name: str) -> IO[str] | None:
        if not self.folder:
            return None
        if name not in self._files:
            self._files[name] = open(os.path.join(self.folder, f"{name}.log"), "a", encoding="utf-8")
        return self._files[name]


def _wanted(message: LogMessage, since: datetime | None, instance: str) -> bool:
    return (since is None or message.timestamp > since) and (not instance or message.instance == instance)
