"""Function logs: every line a replica writes (and the provider's events about it), kept per function.

Lines are held in a bounded buffer per function and appended to ``<run_dir>/logs/<name>.log``; readers
get them as ``LogMessage`` records, optionally following new lines as they arrive.
"""

from __future__ import annotations

import collections
import os
import threading
from datetime import datetime, timezone
from typing import IO, Iterator

from provider.types import LogMessage

PROVIDER_INSTANCE = "provider"


class LogStore:
    """Thread-safe per-function log buffers with follow."""

    def __init__(self, namespace: str, folder: str = "", max_lines: int = 10000) -> None:
        self.namespace = namespace
        self.folder = folder
        self.max_lines = max_lines
        self._cond = threading.Condition()
        self._lines: dict[str, collections.deque[tuple[int, LogMessage]]] = {}
        self._files: dict[str, IO[str]] = {}
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
             instance: str = "", alive=lambda: True) -> Iterator[LogMessage]:
        """Kept lines (the last ``tail`` when >= 0, those after ``since``), then new ones while ``follow``."""
        with self._cond:
            everything = list(self._lines.get(name, ()))
        last = everything[-1][0] if everything else 0
        kept = [(s, m) for s, m in everything if _wanted(m, since, instance)]
        if tail >= 0:
            kept = kept[len(kept) - tail:] if tail else []
        for _, message in kept:
            yield message
        while follow and alive() and not self.closed:
            with self._cond:
                self._cond.wait(0.5)
                fresh = [(s, m) for s, m in self._lines.get(name, ()) if s > last]
            for seq, message in fresh:
                last = seq
                if _wanted(message, since, instance):
                    yield message

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
