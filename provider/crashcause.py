"""Why a replica failed to start, read from its own output: the line a caller of a crash-looping function
is shown, so that "exited with code 3" comes with "RuntimeError: weights not found" (the rest stays in
``faas-infer logs``).

The cause is the last exception line of a traceback (the first unindented line after ``Traceback``), or a
``watchdog:`` line (its configuration errors). It is cut to ``MAX_CAUSE`` characters and, since a
``/function`` answer needs no credentials, values of the replica's secret-looking variables (``API_TOKEN``,
``DB_PASSWORD``...) and passwords in URLs (``redis://:pw@host``) are masked.
"""

from __future__ import annotations

import re
import threading
from typing import Mapping

# Longest cause shown to a caller, in characters.
MAX_CAUSE = 300
# Values shorter than this are not masked: "1" or "on" would mask half the line.
MIN_SECRET = 4
MASK = "***"
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|PASSPHRASE|PWD|KEY|CREDENTIAL|AUTH|PRIVATE|SESSION|COOKIE", re.I)
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(?=@)", re.I)
TRACEBACK = "Traceback (most recent call last):"


class CrashCause:
    """Fed a replica's output line by line; ``cause()`` is the line that says why it failed ("" if none)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._secrets = sorted({v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET},
                               key=len, reverse=True)
        self._lock = threading.Lock()
        self._in_traceback = False
        self._cause = ""

    def feed(self, line: str) -> None:
        """One line of output (its end of line included or not)."""
        line = line.rstrip("\r\n")
        with self._lock:
            if line.startswith(TRACEBACK):
                self._in_traceback = True
            elif self._in_traceback and line.strip() and not line[:1].isspace():
                self._in_traceback = False
                self._cause = line
            elif line.startswith("watchdog: "):
                self._cause = line

    def cause(self) -> str:
        """The last cause seen, masked and bounded."""
        with self._lock:
            text = self._cause
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
        return text if len(text) <= MAX_CAUSE else text[:MAX_CAUSE - 3] + "..."
