"""User-facing errors: the CLI prints them on one line, without a traceback, and exits with status 2."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable


class SessrecError(Exception):
    """An error caused by the user's input or configuration (not a bug in sessrec)."""


class DataError(SessrecError):
    """Bad input data: unreadable file, missing column, wrong type, nothing left after filtering..."""


class ConfigError(SessrecError, ValueError):
    """An invalid option or an invalid combination of options."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for the
    `(reason)` part of a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value",
    "Expected a <class 'NoneType'>",
    "Expected a path but",  # the "config file" alternative jsonargparse offers for every class option
)


def one_line_parser_error(message: str, encoder_hint: Callable[[str], str] | None = None) -> str:
    """jsonargparse's nested, many-line report as one line: `<key path>: <the first real problem>`.

    E.g. 'model.net: class_path 'a.B': No module named 'a'' or
    'trainer.max_epochs: Expected int (got 'abc')'. Unknown shapes fall back to the first line.
    `encoder_hint(class_name)`: the text added to an unknown encoder class (the CLI passes
    `sessrec.encoders.registry.suggest_encoder`: errors never import the registry).
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
    if m := re.match(r"Option '([^']+)' is not accepted$", detail):
        detail += _suggest(m.group(1), _accepted_options(class_path), "accepted")
    m = re.match(r"Expected a dot import path string: (\S+)$", detail)
    if m and keys and keys[-1] == "encoders":
        name = _encoder_key(m.group(1), given)
        if name:
            keys.append(name)
        hint = encoder_hint(m.group(1)) if encoder_hint is not None else ""
        detail = f"unknown encoder class '{m.group(1)}'{hint}"
    if class_path is not None:
        detail = f"class_path '{class_path}': {detail}"
    return f"{'.'.join(keys)}: {detail}" if keys else detail


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest of `choices` to a misspelled `word` (difflib), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: str, choices: list[str], label: str, limit: int = 30) -> str:
    """' (did you mean 'x'?)', else ' (<label>: a, b, ...)', else '' when there are no choices."""
    if not choices:
        return ""
    close = did_you_mean(word, choices)
    if close:
        return f" (did you mean '{close}'?)"
    shown = ", ".join(choices[:limit]) + (", ..." if len(choices) > limit else "")
    return f" ({label}: {shown})"


def _accepted_options(class_path: str | None) -> list[str]:
    """Constructor argument names of `class_path` (following **kwargs to the base classes), or []."""
    if not class_path or "." not in class_path:
        return []
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # an unimportable class is reported by its own message
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else ():
        try:
            params = inspect.signature(klass.__init__).parameters.values()
        except (TypeError, ValueError):
            break
        names += [p.name for p in params if p.name != "self" and p.name not in names
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _encoder_key(class_name: str, given: str | None) -> str | None:
    """The `encoders` key whose class_path is `class_name`, read from jsonargparse's 'Given value:'."""
    if not given:
        return None
    quoted = re.escape(repr(class_name))
    m = re.search(rf"'([^']+)': (?:\{{'class_path': |Namespace\(class_path=){quoted}", given)
    return m.group(1) if m else None
