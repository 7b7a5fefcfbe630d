"""The bundled configs: every `--config` stack the docs show parses against the real class signatures (no
data needed), every configs/ path they name exists, and every YAML under configs/ is used by a tested
combination.

Configs are layers stacked with repeated `--config` (later files override earlier ones): configs/trainer,
configs/data, configs/model, configs/inputs, configs/schedule, plus the logger and predict overlays;
configs/gru4rec and configs/baselines are ready single files, configs/prnn ready single files of stacks.
Commands are read from README.md, docs/, scripts/, the Makefile, the benchmarks' YAML and shell files and
the configs' own headers. Experiment files (configs/paper/) are checked run by run here; tune files
(configs/tune/) are parsed in tests/tune.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sessrec.cli import main
from sessrec.experiment import compose, load_experiment
from sessrec.experiment.spec import Experiment, parse_experiment

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
EXPERIMENTS = [*sorted((CONFIG_DIR / "paper").glob("*.yaml")),
               *sorted(REPO.glob("benchmarks/recbole/sessrec_*.yaml")),
               *sorted(REPO.glob("benchmarks/*.yaml"))]
DEMO = REPO / "scripts" / "demo.sh"  # writes an experiment file (a heredoc) and runs it
TUNES = sorted((CONFIG_DIR / "tune").glob("*.yaml"))
READY_STACKS = sorted((CONFIG_DIR / "prnn").glob("*.yaml"))  # each header shows the stack it equals
PLACEHOLDERS = {"configs/mine.yaml"}  # a user's own config in the docs' examples
LIGHTNING = re.compile(r"-m sessrec (fit|validate|test|predict)\b")
TOOL = re.compile(r"-m sessrec (experiment|tune) --config[ =](\S+?)[`'\"]?(?:\s|$)")
END = re.compile(r"\s#|;|&&|\||>|\)|`")  # a command ends at a comment, a shell operator or inline code's end
PATH = re.compile(r"configs/(?:[A-Za-z0-9_./*<>-]|\{[^{}\s]*\})*")  # {a,b}: shell brace expansion
LOOP = re.compile(r"\bfor (\w+) in ([\w. -]+); do\b")


def _doc_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "Makefile", *sorted((REPO / "docs").rglob("*.md"))]
    files += sorted(p for p in (REPO / "scripts").rglob("*") if p.is_file())
    for pattern in ("benchmarks/*.yaml", "benchmarks/*.sh", "benchmarks/recbole/*.yaml",
                    "benchmarks/recbole/*.sh", "configs/**/*.yaml"):
        files += sorted(REPO.glob(pattern))
    return files


def _logical_text(path: Path) -> str:
    """The file with comment markers dropped (outside Markdown) and backslash continuations joined."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".md":
        text = re.sub(r"(?m)^[ \t]*#+ ?", "", text)
    return re.sub(r"\\\n[ \t]*", " ", text)


@dataclass(frozen=True)
class Command:
    """A LightningCLI command found in a doc: `argv` after `python -m sessrec`, minus --ckpt_path."""

    source: str
    argv: tuple[str, ...]

    @property
    def configs(self) -> list[str]:
        argv, found = self.argv, []
        for i, arg in enumerate(argv):
            if arg in ("--config", "-c") and i + 1 < len(argv):
                found.append(argv[i + 1])
            elif arg.startswith("--config="):
                found.append(arg.split("=", 1)[1])
        return found

    def __str__(self) -> str:
        return f"{self.source}: {shlex.join(self.argv)}"


def _loop_values(text: str, start: int, command: str) -> list[str]:
    """`command` once per value of the shell loop just above it (`for v in a b c; do`), else as it is."""
    loop = None
    for loop in LOOP.finditer(text, max(0, start - 400), start):
        pass
    if loop is None or not re.search(rf"\$\{{?{loop.group(1)}\b", command):
        return [command]
    name = loop.group(1)
    return [re.sub(rf"\$\{{?{name}\}}?", value, command) for value in loop.group(2).split()]


def _commands_in(path: Path) -> list[Command]:
    text, found = _logical_text(path), []
    for match in LIGHTNING.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        rest = text[match.end():]
        if text[line_start:match.start()].count("`") % 2:  # inside inline Markdown code: up to its end
            rest = rest[: rest.find("`")].replace("\n", " ")
        else:
            rest = rest.split("\n", 1)[0]
        end = END.search(rest)
        line = text.count("\n", 0, match.start()) + 1
        for command in _loop_values(text, match.start(), rest[: end.start()] if end else rest):
            tokens = shlex.split(command)
            if any(mark in token for token in tokens for mark in ("$", "<", "...", "[")):
                continue  # a placeholder or a shell variable: not a concrete command
            argv, skip = [match.group(1)], False
            for token in tokens:
                if skip or token.startswith("--ckpt_path"):  # print_config never reads it
                    skip = token == "--ckpt_path"
                    continue
                if token != "--print_config":
                    argv.append(token)
            found.append(Command(f"{path.relative_to(REPO)}:{line}", tuple(argv)))
    return found


def _all_commands() -> list[Command]:
    seen, commands = set(), []
    for path in _doc_files():
        for command in _commands_in(path):
            if command.argv not in seen:
                seen.add(command.argv)
                commands.append(command)
    return commands


COMMANDS = _all_commands()
TESTED = [c for c in COMMANDS
          if c.configs and all(p.startswith("configs/") and p not in PLACEHOLDERS for p in c.configs)]


def _print_config(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def test_the_docs_show_stacks():
    assert len(TESTED) >= 40
    assert any(len(c.configs) >= 5 for c in TESTED)  # trainer, data, model, inputs, schedule


@pytest.mark.parametrize("command", TESTED, ids=str)
def test_doc_command_parses(command, capsys, monkeypatch):
    """The command's stack, merged by LightningCLI as `python -m sessrec ... --print_config` would."""
    monkeypatch.chdir(REPO)  # config paths are relative to the repository root in the docs
    missing = [p for p in command.configs if not (REPO / p).is_file()]
    assert not missing, f"{command.source}: no such config {', '.join(missing)}"
    printed = _print_config(list(command.argv), capsys)
    assert "class_path" in printed and "data_dir" in printed


def _expand(path: str) -> list[str]:
    """Shell brace expansion of one configs/ path (`configs/baselines/{pop,spop}.yaml`)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for part in match.group(1).split(",")
            for p in _expand(path[: match.start()] + part + path[match.end():])]


def test_every_configs_path_the_docs_name_exists():
    stale = []
    for doc in _doc_files():
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for found in PATH.findall(line):
                for path in _expand(found.rstrip(".,")):
                    if "<" in path or path in PLACEHOLDERS:
                        continue
                    exists = (any(REPO.glob(path)) if "*" in path else
                              (REPO / path).is_file() if path.endswith(".yaml") else (REPO / path).is_dir())
                    if not exists:
                        stale.append(f"{doc.relative_to(REPO)}:{number}: {path}")
    assert not stale, "paths that do not exist:\n" + "\n".join(stale)


@pytest.mark.parametrize("ready", READY_STACKS, ids=lambda p: p.name)
def test_ready_files_equal_their_stacks(ready, capsys, monkeypatch):
    """configs/prnn/<x>.yaml holds, as one file, the stack its header shows (for tools that read one YAML)."""
    monkeypatch.chdir(REPO)
    (stack,) = [c for c in _commands_in(ready) if len(c.configs) > 1]
    as_file = _print_config(["fit", "--config", str(ready.relative_to(REPO))], capsys)
    assert _print_config(list(stack.argv), capsys) == as_file


def _tune_bases(path: Path) -> list[Path]:
    base = yaml.safe_load(path.read_text())["base"]
    return [(path.parent / b).resolve() for b in (base if isinstance(base, list) else [base])]


def _experiments() -> dict[str, Experiment]:
    """Every experiment file the repository runs, by name (paths relative to the repository root)."""
    found = {str(path.relative_to(REPO)): load_experiment(path.relative_to(REPO)) for path in EXPERIMENTS}
    (demo,) = re.findall(r"<<'YAML'\n(.*?)\nYAML\n", DEMO.read_text(encoding="utf-8"), re.DOTALL)
    found["scripts/demo.sh"] = parse_experiment(yaml.safe_load(demo), "scripts/demo.sh")
    return found


def test_every_config_is_used_by_a_tested_combination(monkeypatch):
    """Each YAML under configs/ is in a doc command parsed above, a run of an experiment file, a tune
    file's base, a ready file checked against its stack, or an experiment or tune file a doc command runs."""
    monkeypatch.chdir(REPO)
    used = {(REPO / p).resolve() for c in TESTED for p in c.configs} | {p.resolve() for p in READY_STACKS}
    used |= {(REPO / c).resolve() for spec in _experiments().values() for run in spec.runs for c in run.configs}
    used |= {base for path in TUNES for base in _tune_bases(path)}
    for doc in _doc_files():
        used |= {(REPO / m.group(2)).resolve() for m in TOOL.finditer(_logical_text(doc))}
    unused = sorted(str(p.relative_to(REPO)) for p in CONFIG_DIR.rglob("*.yaml") if p.resolve() not in used)
    assert not unused, f"configs no tested doc combination uses: {unused}"


def _experiment_runs() -> list[tuple[str, str]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # run config paths are relative to the working directory
        return [(name, run.name) for name, spec in _experiments().items() for run in spec.runs]


@pytest.mark.parametrize(("experiment", "run"), _experiment_runs())
def test_experiment_run_parses(experiment, run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    spec = _experiments()[experiment]
    (chosen,) = spec.select([run])
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(compose(spec, chosen)))
    assert "class_path" in _print_config(["fit", "--config", str(config)], capsys)
