"""An operator's identity: its signature (type, parameters, per-item input shapes) and the key derived from it.

Torch-free. The tracer builds the signature text; this module only names it and hashes it, so two models
that use the same operator on the same per-item shapes share one entry in the profile DB.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def signature_key(signature: str) -> str:
    """Stable short key of a signature text (sha1, 16 hex digits)."""
    return hashlib.sha1(signature.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class OperatorSpec:
    """A distinct operator as stored in the profile DB."""

    # Key in the DB: signature_key(signature).
    key: str
    # Short human name, e.g. "Conv2d" or "add".
    name: str
    # Full signature: kind and target, parameters, per-item input shapes and dtypes (batch dims as -k).
    signature: str
    # True for view-like operators whose cost does not depend on batch or threads (timed once).
    invariant: bool = False

    @classmethod
    def create(cls, name: str, signature: str, invariant: bool = False) -> "OperatorSpec":
        """A spec whose key is derived from its signature."""
        return cls(signature_key(signature), name, signature, invariant)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"key": self.key, "name": self.name, "signature": self.signature, "invariant": self.invariant}

    @classmethod
    def from_dict(cls, data: dict) -> "OperatorSpec":
        """Inverse of to_dict."""
        return cls(str(data["key"]), str(data["name"]), str(data["signature"]), bool(data.get("invariant")))
