"""AWS Signature Version 4 for S3 requests (header form), checked against AWS's published test suite."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    """An access key pair and where it signs."""

    access_key: str
    secret_key: str
    region: str = "us-east-1"
    service: str = "s3"


def _uri_encode(text: str, slash: bool) -> str:
    return quote(text, safe="-_.~" + ("/" if not slash else ""))


def canonical_query(pairs: list[tuple[str, str]]) -> str:
    """Query parameters encoded and sorted by key, then value."""
    encoded = sorted((_uri_encode(k, True), _uri_encode(v, True)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(method: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str],
                      payload_hash: str) -> tuple[str, str]:
    """(canonical request, signed header list) of a request; every header given is signed."""
    lower = {k.lower().strip(): " ".join(str(v).split()) for k, v in headers.items()}
    names = sorted(lower)
    lines = [method.upper(), _uri_encode(path or "/", False), canonical_query(query),
             "".join(f"{n}:{lower[n]}\n" for n in names), ";".join(names), payload_hash]
    return "\n".join(lines), ";".join(names)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signature(creds: Credentials, amz_date: str, canonical: str) -> str:
    """The hex signature of a canonical request at ``amz_date`` (YYYYMMDDTHHMMSSZ)."""
    day = amz_date[:8]
    scope = f"{day}/{creds.region}/{creds.service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + creds.secret_key).encode(), day)
    for part in (creds.region, creds.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(creds: Credentials, method: str, path: str, query: list[tuple[str, str]],
                  headers: Mapping[str, str], payload_hash: str, amz_date: str) -> str:
    """The ``Authorization`` header value; ``headers`` must include host and x-amz-date."""
    canonical, signed = canonical_request(method, path, query, headers, payload_hash)
    scope = f"{amz_date[:8]}/{creds.region}/{creds.service}/aws4_request"
    return (f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature(creds, amz_date, canonical)}")
