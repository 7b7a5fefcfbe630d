"""Encoder registry: short names for built-ins, plug-ins from the project's `encoders/` folder and from
installed packages (entry point group ``sessrec.encoders``).

How a config names an encoder (LightningCLI / jsonargparse resolve ``class_path``, the registry does not
take part in parsing):

- built-ins: by class name (``class_path: DenseEncoder``) or import path
  (``class_path: sessrec.encoders.DenseEncoder``);
- a plug-in in ``<project>/encoders/<module>.py``: by import path,
  ``class_path: encoders.<module>.<Class>``, or by class name once `discover()` has imported it.
  `discover(root)` puts ``root`` (default: the working directory) first on ``sys.path`` and imports
  every ``encoders/*.py`` not starting with ``_`` as ``encoders.<module>`` (a namespace package: the
  folder needs no ``__init__.py``); the CLI calls it before parsing;
- an installed package: declares ``[project.entry-points."sessrec.encoders"] my_name = "pkg.mod:Class"``
  and configs use ``class_path: pkg.mod.Class`` (or the class name after `discover()`).

One naming scheme for configs: the class name (or the import path); ``python -m sessrec encoders`` lists
the class names first. Short names, for the Python API (`get("dense")` and `get("DenseEncoder")` are the
same class), come from a class attribute ``name`` or the
snake_case class name without an ``Encoder`` suffix (``TextTransformerEncoder`` -> ``text_transformer``);
entry points register under their entry point name. A name registered twice by different classes is a
`ConfigError` naming both sources, as transformers' ``AutoModel.register`` refuses duplicates.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from pathlib import Path

from sessrec.encoders.base import FeatureEncoder
from sessrec.encoders.concat import ConcatEncoder
from sessrec.encoders.dense import DenseEncoder
from sessrec.encoders.item_id import ItemIdEncoder
from sessrec.encoders.properties import PropertyEncoder
from sessrec.encoders.sparse_text import SparseTextEncoder
from sessrec.errors import ConfigError, did_you_mean

ENTRY_POINT_GROUP = "sessrec.encoders"
PLUGIN_PACKAGE = "encoders"
BUILTIN = "built-in"
BUILTINS: tuple[type[FeatureEncoder], ...] = (
    ItemIdEncoder, DenseEncoder, SparseTextEncoder, PropertyEncoder, ConcatEncoder
)


def default_name(cls: type) -> str:
    """The class's own ``name`` attribute, else its snake_case name without an ``_encoder`` suffix."""
    own = cls.__dict__.get("name")
    if isinstance(own, str) and own:
        return own
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z])(?=[a-z])", r"_\1\2", cls.__name__).lower()
    return snake.removesuffix("_encoder") or snake


def class_path(cls: type) -> str:
    """``module.Class`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry:
    """Name -> (encoder class, source) with loud duplicate detection."""

    def __init__(self, builtins: bool = True) -> None:
        self._entries: dict[str, tuple[type[FeatureEncoder], str]] = {}
        if builtins:
            for cls in BUILTINS:
                self.register(default_name(cls), cls, BUILTIN)

    def register(self, name: str, cls: type, source: str = "registered") -> None:
        """Add `cls` under `name`; ConfigError if `name` is taken by another class or `cls` is no encoder."""
        if not (inspect.isclass(cls) and issubclass(cls, FeatureEncoder)):
            raise ConfigError(f"encoder '{name}' ({source}): {cls!r} is not a FeatureEncoder subclass")
        if name in self._entries:
            old, old_source = self._entries[name]
            if old is cls:
                return
            raise ConfigError(
                f"encoder name '{name}' registered twice: {class_path(old)} ({old_source}) "
                f"and {class_path(cls)} ({source})"
            )
        self._entries[name] = (cls, source)

    def get(self, name: str) -> type[FeatureEncoder]:
        """The class registered under the short name or class name `name` (as a config names it),
        running `discover()` once if it is unknown."""
        found = self._find(name)
        if found is None:
            self.discover()
            found = self._find(name)
        if found is None:
            known = sorted({cls.__name__ for cls, _ in self._entries.values()})
            raise ConfigError(f"unknown encoder '{name}' (available: {', '.join(known)})")
        return found

    def _find(self, name: str) -> type[FeatureEncoder] | None:
        if name in self._entries:
            return self._entries[name][0]
        return next((cls for cls, _ in self._entries.values() if cls.__name__ == name), None)

    def available(self) -> dict[str, tuple[type[FeatureEncoder], str]]:
        """Every registered name -> (class, source), sorted by name."""
        return dict(sorted(self._entries.items()))

    def discover(self, root: str | os.PathLike | None = None, entry_points: bool = True) -> list[str]:
        """Register the plug-ins of ``<root>/encoders/`` (default root: cwd) and of entry points.

        Returns the names found (already registered ones included).
        """
        names = self.discover_folder(Path.cwd() if root is None else Path(root))
        return names + (self.discover_entry_points() if entry_points else [])

    def discover_folder(self, root: Path) -> list[str]:
        """Import ``root/encoders/*.py`` as ``encoders.<module>`` and register their encoders."""
        folder = root / PLUGIN_PACKAGE
        if not folder.is_dir():
            return []
        root_str = str(root.resolve())
        if root_str in sys.path:
            sys.path.remove(root_str)
        sys.path.insert(0, root_str)
        importlib.invalidate_caches()
        names = []
        for file in sorted(folder.glob("*.py")):
            if not file.name.startswith("_"):
                names += self._register_module(_import_plugin(file), f"encoders folder: {file}")
        return names

    def _register_module(self, module: object, source: str) -> list[str]:
        names = []
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, FeatureEncoder)
                and obj is not FeatureEncoder
                and obj.__module__ == module.__name__
                and not inspect.isabstract(obj)
            ):
                self.register(default_name(obj), obj, source)
                names.append(default_name(obj))
        return names

    def discover_entry_points(self) -> list[str]:
        """Load the ``sessrec.encoders`` entry points of installed packages and register them."""
        names = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None)
            source = f"entry point {ep.name} = {ep.value}" + (f" (package {dist})" if dist else "")
            try:
                cls = ep.load()
            except Exception as err:  # any import-time failure of third-party code
                raise ConfigError(f"{source}: cannot load ({type(err).__name__}: {err})") from None
            self.register(ep.name, cls, source)
            names.append(ep.name)
        return names


def _import_plugin(file: Path) -> object:
    """Import ``encoders/<stem>.py`` as ``encoders.<stem>``; ConfigError if it fails or is shadowed."""
    name = f"{PLUGIN_PACKAGE}.{file.stem}"
    try:
        module = importlib.import_module(name)
    except Exception as err:  # any import-time failure of user code
        raise ConfigError(f"{file}: cannot import encoder plug-in ({type(err).__name__}: {err})") from None
    found = Path(getattr(module, "__file__", "") or "")
    if not found.is_file() or found.resolve() != file.resolve():
        raise ConfigError(f"{file}: module '{name}' resolves to {found} instead (another '{PLUGIN_PACKAGE}' "
                          "package shadows the project's encoders/ folder)")
    return module


REGISTRY = Registry()


def register(name: str, cls: type) -> None:
    """Register `cls` under `name` in the default registry (ConfigError on a duplicate name)."""
    REGISTRY.register(name, cls, f"registered from {inspect.getmodule(cls).__name__}")


def get(name: str) -> type[FeatureEncoder]:
    """The encoder class registered under `name` in the default registry."""
    return REGISTRY.get(name)


def available() -> dict[str, tuple[type[FeatureEncoder], str]]:
    """name -> (class, source) of the default registry."""
    return REGISTRY.available()


def known_encoders() -> tuple[list[str], dict[str, str]]:
    """Class names a config can use (sorted) and short name -> class name, from the default registry."""
    entries = REGISTRY.available()
    classes = sorted({cls.__name__ for cls, _ in entries.values()})
    return classes, {name: cls.__name__ for name, (cls, _) in entries.items()}


def suggest_encoder(class_name: str) -> str:
    """' (did you mean ...?; known encoders: ...)' for an unknown encoder class, from the default registry
    (built-ins and plug-ins): `sessrec.errors.one_line_parser_error`'s `encoder_hint`."""
    classes, names = known_encoders()
    close = names.get(class_name) or did_you_mean(class_name, list(classes)) or did_you_mean(
        class_name.lower(), list(names))
    close = names.get(close, close)
    hint = f"did you mean '{close}'?; " if close else ""
    return (f" ({hint}known encoders: {', '.join(classes)}; or an import path such as "
            "encoders.my_module.MyEncoder)")


def discover(root: str | os.PathLike | None = None, entry_points: bool = True) -> list[str]:
    """Discover plug-ins into the default registry (see `Registry.discover`)."""
    return REGISTRY.discover(root, entry_points)
