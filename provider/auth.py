"""Basic auth as OpenFaaS does it: credentials from secret files, ``/system/*`` protected but
``/system/namespaces``; ``/function/*``, ``/healthz`` and ``/metrics`` open."""

from __future__ import annotations

import base64
import hmac
import os
from dataclasses import dataclass

REALM = 'Basic realm="Restricted"'
USER_FILE = "basic-auth-user"
PASSWORD_FILE = "basic-auth-password"


@dataclass(frozen=True)
class Credentials:
    """The one user the API accepts."""

    # User name (file basic-auth-user).
    user: str
    # Password (file basic-auth-password), surrounding whitespace trimmed as faas-provider does.
    password: str

    @classmethod
    def read(cls, secret_mount_path: str) -> "Credentials":
        """Read both files; ``OSError`` names a missing one."""
        with open(os.path.join(secret_mount_path, USER_FILE), encoding="utf-8") as f:
            user = f.read().strip()
        with open(os.path.join(secret_mount_path, PASSWORD_FILE), encoding="utf-8") as f:
            password = f.read().strip()
        return cls(user, password)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (Basic only; the scheme is matched
        case-insensitively, as Go's ``Request.BasicAuth``)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.user.encode()) & \
            hmac.compare_digest(password.encode(), self.password.encode())


def protected(path: str) -> bool:
    """Whether ``path`` needs credentials when auth is on."""
    return path.startswith("/system/") and path.rstrip("/") != "/system/namespaces"


def write_secrets(folder: str, user: str, password: str) -> None:
    """Create the two secret files (mode 0600), as faasd does on first start."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name, value in ((USER_FILE, user), (PASSWORD_FILE, password)):
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
