"""``LOG_LEVEL`` (and ``--log-level``): the logging level our processes start with, checked first, so that a
typo is a one-line error naming it rather than the traceback ``logging.basicConfig`` raises."""

from __future__ import annotations

import logging
import sys
from typing import Mapping

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_level(text: str) -> str:
    """The level ``text`` names, in capitals, as ``logging`` takes it (any case, spaces around, and logging's
    other names: WARN, FATAL, NOTSET); ``ValueError`` listing the levels otherwise."""
    level = text.strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError(f"{text!r}: not a logging level (one of {', '.join(LEVELS)}, in any case)")
    return level


def env_level(env: Mapping[str, str]) -> str:
    """The level ``$LOG_LEVEL`` names (INFO when unset), as ``parse_level`` reads it: every entry point takes
    it from here, so that what a check accepted (" debug ") is what ``logging`` is given, not its raw text;
    ``ValueError`` naming the variable otherwise."""
    try:
        return parse_level(env.get("LOG_LEVEL", "INFO"))
    except ValueError as exc:
        raise ValueError(f"LOG_LEVEL={exc}") from None


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_from_env(env: Mapping[str, str], program: str) -> bool:
    """Configure logging at ``$LOG_LEVEL``; a bad level is one line on stderr, ``<program>: LOG_LEVEL=...``,
    and False (the caller exits 2)."""
    try:
        level = env_level(env)
    except ValueError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return False
    logging.basicConfig(level=level, format=FORMAT)
    return True
