"""ghnas's own error type for bad input.

:class:`InputError` marks a problem with what the caller asked for (an unknown name, a
value out of range, an output folder that belongs to another run), as opposed to a bug.
It subclasses ``ValueError``, so ``except ValueError`` keeps catching it. The command
line reports it (and the other documented input errors: an invalid architecture string,
a missing or existing file) as one line with exit status 2; anything else keeps its
traceback, since it is a bug to report.
"""
from __future__ import annotations

__all__ = ["InputError", "DegenerateResultWarning"]


class InputError(ValueError):
    """Bad input to ghnas: the message names the bad value and what is valid."""


class DegenerateResultWarning(UserWarning):
    """A proxy gave every architecture the same (or no finite) score, so nothing was ranked."""
