"""Errors of the provider API. Each class is one HTTP status, answered the way Go's ``http.Error`` does.

    ProviderError          500
    ├── BadRequest         400  malformed body, invalid name, unknown image with no handler
    ├── Unauthorized       401  basic auth on and missing or wrong credentials
    ├── NotFound           404  no such function
    ├── Conflict           409  POST of a function that already exists
    ├── TooManyRequests    429  too many log follows open at once, async queue full
    ├── NotImplementedByProvider 501  an OpenFaaS feature this provider does not offer (secrets)
    └── Unavailable        503  no ready replica for an invocation
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class; ``status`` is the HTTP status the API answers with."""

    status = 500


class BadRequest(ProviderError):
    """The request cannot be served as sent."""

    status = 400


class Unauthorized(ProviderError):
    """Basic auth is on and the credentials are missing or wrong."""

    status = 401


class NotFound(ProviderError):
    """The named function does not exist in the namespace."""

    status = 404


class Conflict(ProviderError):
    """The function already exists."""

    status = 409


class TooManyRequests(ProviderError):
    """A bounded resource (log follows, the async queue) is all in use; the client may retry later."""

    status = 429


class NotImplementedByProvider(ProviderError):
    """An OpenFaaS feature this provider does not offer."""

    status = 501


class Unavailable(ProviderError):
    """No ready replica could take the invocation in time."""

    status = 503
