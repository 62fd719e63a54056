"""Health and shutdown state: the lock file, whether new work is accepted, and the drain order."""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)


class Lifecycle:
    """Tracks ready / draining; owns ``$TMPDIR/.lock`` as OpenFaaS health checks expect."""

    def __init__(self, tmp_dir: str, suppress_lock: bool) -> None:
        self.lock_path = os.path.join(tmp_dir, ".lock")
        self.suppress_lock = suppress_lock
        self._accepting = threading.Event()
        self.drained = threading.Event()

    def mark_ready(self) -> None:
        """Write the lock file and start accepting work."""
        if not self.suppress_lock:
            os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
            with open(self.lock_path, "w"):
                pass
        self._accepting.set()

    def begin_drain(self) -> None:
        """Stop reporting healthy: remove the lock file; in-flight and queued work still completes."""
        if not self._accepting.is_set():
            return
        self._accepting.clear()
        if not self.suppress_lock:
            try:
                os.remove(self.lock_path)
            except FileNotFoundError:
                pass
        logger.info("draining: /_/health and /_/ready now answer 503")

    @property
    def accepting(self) -> bool:
        """True while healthy and not draining."""
        return self._accepting.is_set()

    def healthy(self) -> bool:
        """What /_/health reports: accepting and the lock file present. With ``suppress_lock`` the watchdog
        writes none, so something else must (as with OpenFaaS's watchdogs, whose health check reads the
        file whatever suppress_lock says)."""
        return self.accepting and os.path.exists(self.lock_path)
