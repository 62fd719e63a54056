"""The cost model, after FSD-Inference: function GB-seconds and invocations plus per-request channel prices.

Defaults are AWS list prices (us-east-1): Lambda $0.0000166667 per GB-s and $0.20 per million invocations;
SQS $0.40 per million requests, each 64 KiB of payload billed as one request (our Redis queue channel is
priced as SQS); S3 $0.005 per thousand PUT/LIST and $0.0004 per thousand GET, DELETE free. Every price
is configurable (``FSD_PRICES``, a JSON object of the field names below).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from typing import Mapping, Sequence

from fsd.channel import Usage
from fsd.errors import ConfigError


@dataclass(frozen=True)
class Prices:
    """Dollar prices."""

    # Per GB-second of function memory x billed duration.
    gb_second: float = 0.0000166667
    # Per function invocation.
    invocation: float = 0.20e-6
    # Queue channel: per request (send or receive) of up to 64 KiB.
    queue_request: float = 0.40e-6
    # Object channel: per PUT.
    s3_put: float = 5.0e-6
    # Object channel: per GET, found or not.
    s3_get: float = 0.4e-6
    # Object channel: per LIST.
    s3_list: float = 5.0e-6
    # Object channel: per DELETE.
    s3_delete: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Prices":
        """Defaults overridden by a JSON object, e.g. ``{"gb_second": 1.5e-5}``."""
        if not text.strip():
            return cls()
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"FSD_PRICES={text!r}: must be a JSON object of numbers ({exc})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"FSD_PRICES={text!r}: must be a JSON object of numbers, got {type(doc).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise ConfigError(f"FSD_PRICES: unknown price {sorted(unknown)[0]!r} (known: {', '.join(sorted(known))})")
        for key, value in doc.items():  # a negative, NaN or true price made every reported cost meaningless
            if type(value) not in (int, float) or not 0 <= value < math.inf:
                raise ConfigError(f"FSD_PRICES={text!r}: {key}={value!r} must be a number >= 0")
        return replace(cls(), **{k: float(v) for k, v in doc.items()})

    def per_request(self, channel: str) -> dict[str, float]:
        """Price of each request kind a channel meters."""
        if channel == "redis":
            return {"send": self.queue_request, "receive": self.queue_request, "delete": 0.0}
        return {"put": self.s3_put, "get": self.s3_get, "list": self.s3_list, "delete": self.s3_delete}


@dataclass(frozen=True)
class Cost:
    """The modelled price of one run."""

    gb_seconds: float
    compute_usd: float
    invocation_usd: float
    channel_usd: float
    total_usd: float
    per_example_usd: float

    def to_json(self) -> dict:
        """A JSON-safe dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def run_cost(prices: Prices, channel: str, billed: Sequence[tuple[float, float]], usage: Usage,
             examples: int) -> Cost:
    """Cost of a run: ``billed`` holds (memory MB, seconds) per function invocation."""
    gb_seconds = sum(mb / 1024 * s for mb, s in billed)
    table = prices.per_request(channel)
    channel_usd = sum(table.get(kind, 0.0) * count for kind, count in usage.requests.items())
    compute = gb_seconds * prices.gb_second
    invocations = len(billed) * prices.invocation
    total = compute + invocations + channel_usd
    return Cost(gb_seconds, compute, invocations, channel_usd, total, total / max(1, examples))


def usage_sum(usages: Mapping[object, Usage] | Sequence[Usage]) -> Usage:
    """The sum of several usages."""
    total = Usage()
    for u in (usages.values() if isinstance(usages, Mapping) else usages):
        total = total + u
    return total
