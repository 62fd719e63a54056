"""Errors of distributed inference.

    FsdError            base of everything below
      ConfigError       a setting broke its rule; the message names key, value and rule
      ChannelError      a channel backend failed (Redis down, S3 answered an error status)
        ChannelTimeout  an expected message did not arrive before the deadline (lost message, dead peer)
      WorkerFailed      a worker function answered an error, could not be reached, or timed out
      JobAborted        the job is over for this rank: the coordinator gave up on it, or it expired first
"""

from __future__ import annotations


class FsdError(RuntimeError):
    """Base of distributed-inference errors."""


class ConfigError(FsdError, ValueError):
    """A setting broke its rule; the message names key, value and rule."""


class ChannelError(FsdError):
    """A channel backend failed."""


class ChannelTimeout(ChannelError):
    """Expected messages did not arrive before the deadline."""


class WorkerFailed(FsdError):
    """A worker function failed, was unreachable, or did not answer in time."""


class JobAborted(FsdError):
    """The coordinator marked the job aborted, or the job's deadline passed before the rank started it."""
