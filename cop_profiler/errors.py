"""Errors of the COP profiler.

``CopError`` is the base. ``ModelRefError``: a model reference cannot be resolved or built.
``TraceError``: a model cannot be turned into an operator graph (neither by torch.fx nor by recording).
``ModelRunError``: the model raises when run whole on its example input (warm-up, calibration, ``--plot``).
``OperatorRunError``: one operator raises when run alone on the inputs the profiler makes for it.
``ProfileDBError``: the profile DB is unreadable or of another schema. ``NoProfileError``: the DB lacks
the model or the timings needed for a prediction on this hardware.
"""

from __future__ import annotations


# What user code (a model, its builder, its example_input) may raise as its own failure: sys.exit() in a model
# file is SystemExit, not an Exception, and went past every handler, ending the command with the user's
# status and no error line. KeyboardInterrupt stays the user's Ctrl-C.
USER_ERRORS = (Exception, SystemExit)


class CopError(Exception):
    """Base of every COP profiler error."""


class ModelRefError(CopError):
    """A model reference (handler folder or module:function) cannot be resolved or built."""


class TraceError(CopError):
    """A model cannot be traced into an operator graph."""


class ModelRunError(CopError):
    """The model raises when run whole on its example input at some batch size."""


class OperatorRunError(CopError):
    """An operator raises when run alone on generated inputs (random values, the largest batch)."""


class ProfileDBError(CopError):
    """The profile DB cannot be used."""


class NoProfileError(CopError):
    """The DB has no graph for the model, or no timings for it on this hardware and device."""


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type when it says nothing), at most 300 characters: torch's errors
    run to pages."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
