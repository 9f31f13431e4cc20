"""Whether a download can start: asked before one, so that offline work fails in seconds."""
from __future__ import annotations

import os
import socket
import urllib.parse

# Either variable set to 1/true/yes declares the machine offline: no download is attempted.
OFFLINE_VARIABLES = ("EVOLVER_OFFLINE", "HF_HUB_OFFLINE")


def declared_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a download from `url` can start: not declared offline, and its host answers in `timeout` s.

    Asked before a download so that an offline machine fails in seconds rather than after
    the download libraries' retries.
    """
    if declared_offline():
        return False
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline_reason(url: str) -> str:
    """Why `reachable(url)` said no, for error messages."""
    if declared_offline():
        return "the machine is declared offline (" + " or ".join(f"{v}=1" for v in OFFLINE_VARIABLES) + ")"
    return f"{urllib.parse.urlsplit(url).hostname} is unreachable"
