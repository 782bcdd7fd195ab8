"""Who the service answers, without importing the app: the launcher checks --host and the token
with these before anything heavy is loaded."""

from __future__ import annotations

import ipaddress
import os

TOKEN_ENV = "CENTERCLIP_TOKEN"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the name localhost: addresses only this machine can reach."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def host_of(header: str) -> str:
    """The host of a Host header, without its port: ``[::1]:8000`` is ``::1``."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0]


def token_from_env(token: str | None) -> str | None:
    return token or os.environ.get(TOKEN_ENV) or None
