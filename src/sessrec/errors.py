"""User-facing errors: the CLI prints them on one line, without a traceback, and exits with status 2."""

from __future__ import annotations


class SessrecError(Exception):
    """An error caused by the user's input or configuration (not a bug in sessrec)."""


class DataError(SessrecError):
    """Bad input data: unreadable file, missing column, wrong type, nothing left after filtering..."""


class ConfigError(SessrecError, ValueError):
    """An invalid option or an invalid combination of options."""
