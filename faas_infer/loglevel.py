"""``LOG_LEVEL`` (and ``--log-level``): the logging level our processes start with, checked first, so that a
typo is a one-line error naming it rather than the traceback ``logging.basicConfig`` raises."""

from __future__ import annotations

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_level(text: str) -> str:
    """The level ``text`` names, in capitals (any case is accepted); ``ValueError`` listing the levels otherwise."""
    level = text.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"{text!r}: not a logging level (one of {', '.join(LEVELS)}, in any case)")
    return level
