"""User-facing errors: the CLI prints them on one line, without a traceback, and exits with status 2."""

from __future__ import annotations

import re


class SessrecError(Exception):
    """An error caused by the user's input or configuration (not a bug in sessrec)."""


class DataError(SessrecError):
    """Bad input data: unreadable file, missing column, wrong type, nothing left after filtering..."""


class ConfigError(SessrecError, ValueError):
    """An invalid option or an invalid combination of options."""


_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value",
    "Expected a <class 'NoneType'>",
    "Expected a path but",  # the "config file" alternative jsonargparse offers for every class option
)


def one_line_parser_error(message: str) -> str:
    """jsonargparse's nested, many-line report as one line: `<key path>: <the first real problem>`.

    E.g. 'model.net: class_path 'a.B': No module named 'a'' or
    'trainer.max_epochs: Expected int (got 'abc')'. Unknown shapes fall back to the first line.
    """
    lines = [line.strip() for line in message.splitlines()]
    given_type = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value type:")), "")
    given = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value:")), None)
    keys: list[str] = []
    class_path, detail = None, None
    for line in lines:
        line = line.removeprefix("- ").strip()
        if m := re.match(r'Parser key "([^"]+)":\s*(.*)$', line):
            keys.append(m.group(1))
            class_path, detail = None, m.group(2) or None
        elif m := re.match(r"Problem with given class_path '([^']+)':\s*(.*)$", line):
            class_path, detail = m.group(1), m.group(2) or None
        elif line and not line.startswith(_NOISE):
            detail = line
        if detail:
            break
    if detail is None:
        return next((ln for ln in lines if ln), "invalid arguments")
    detail = re.sub(r"(?:an? )?<class '([\w.]+)'>", r"\1", detail)
    plain = given_type in ("<class 'str'>", "<class 'int'>", "<class 'float'>")  # not a nested object
    if class_path is None and given is not None and plain:
        if "Got value" not in detail and repr(given) not in detail:
            detail += f" (got {given!r})"
    if class_path is not None:
        detail = f"class_path '{class_path}': {detail}"
    return f"{'.'.join(keys)}: {detail}" if keys else detail
