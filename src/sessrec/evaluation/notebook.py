"""Run a parameterised notebook (papermill's convention) on a user's own runs and data.

The notebook's parameters live in one code cell tagged ``parameters``; `run_notebook` inserts a cell
tagged ``injected-parameters`` right after it (``NAME = value`` lines, so later assignments win), runs
every cell with nbclient in a fresh kernel and writes the executed notebook. The same notebook then runs
unchanged under papermill or Jupyter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sessrec.errors import ConfigError
from sessrec.io import atomic_write


def inject(notebook: Any, parameters: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
    """Insert the ``injected-parameters`` cell after the ``parameters`` cell (ConfigError when the
    notebook has none, or when a parameter is not one of its names); `defaults` are injected for the
    names the notebook has and `parameters` does not set."""
    import nbformat

    index = next((i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if index is None:
        raise ConfigError("the notebook has no cell tagged 'parameters'")
    known = _assigned_names(notebook.cells[index].source)
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ConfigError(f"unknown notebook parameter {unknown[0]!r} (parameters: {', '.join(sorted(known))})")
    parameters = {**{k: v for k, v in (defaults or {}).items() if k in known}, **parameters}
    source = "# Injected parameters\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def run_notebook(
    path: str | os.PathLike, out: str | os.PathLike, parameters: dict[str, Any], cwd: str | os.PathLike,
    timeout: int = 1800,
) -> Path:
    """Execute `path` with `parameters` in a kernel started in `cwd` (a ``PROJECT_ROOT`` parameter, when
    the notebook has one, defaults to `cwd`); write the result to `out` (atomic, also when a cell fails:
    the error is in the written notebook and raised as ConfigError)."""
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as err:
        raise ConfigError(f"running notebooks needs {err.name}: pip install 'sessrec[notebook]'") from None
    notebook = nbformat.read(path, as_version=4)
    inject(notebook, parameters, {"PROJECT_ROOT": str(Path(cwd).resolve())})
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as err:
        failure = err
    with atomic_write(out) as tmp:
        nbformat.write(notebook, str(tmp))
    if failure is not None:
        name = getattr(failure, "ename", type(failure).__name__)
        value = getattr(failure, "evalue", "")
        raise ConfigError(f"{path}: a cell failed ({name}: {value}); the executed notebook is in {out}")
    return Path(out)


def _assigned_names(source: str) -> set[str]:
    import ast

    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}
