"""The one exception that means "the user asked for something that does not exist"."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class BadInput(ValueError):
    """Input the user can fix: a wrong spec, a missing file, an unknown name.

    The message is one paragraph that names what was wrong and what is valid; the
    command line prints it without a traceback and exits with status 2.
    """


def nearest(name: str, choices: Iterable[str], n: int = 5) -> str:
    """A phrase listing the choices closest to `name`, for error messages."""
    choices = list(dict.fromkeys(choices))
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        close = [c for c in choices if name.lower() in c.lower()][:n]
    return ", ".join(close) if close else "none close"


class RigError(RuntimeError):
    """A recorded neuron's rig stopped answering: the run stops with this message (exit status 1),
    everything up to its last finished generation recorded, and can be resumed."""


class Interrupted(KeyboardInterrupt):
    """A run or sweep stopped by Ctrl-C (SIGINT) or SIGTERM, once what it had finished was recorded. The
    message says what was recorded and the command that continues it; the command line prints it and
    exits with status 130. A KeyboardInterrupt still, for code that catches those."""
