"""Every `alnvid <command>` and `--option` that the package's messages, fixes and help texts name exists.

The command tree is walked from `typer.main.get_command(app)` (Typer vendors Click, so it is duck-typed here).
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import typer

from alnvid.cli.main import app

PACKAGE = Path(__file__).resolve().parent.parent / "alnvid"
BACKTICKED = re.compile(r"`([^`]+)`")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
COMMAND = re.compile(r"\balnvid((?: [a-z][a-z0-9-]*)+)")
PROSE = {"manifest", "checkpoint", "source", "to"}
"""Words after "alnvid" in prose ("an alnvid manifest", "upgrade alnvid to 0.3"), not a command."""
ARGV_ITEM = re.compile(r"--[a-z][a-z0-9-]*(=.*)?")
"""A string that is one command-line item: an option declaration, or an argument list for another tool (git)."""


def _texts() -> list[tuple[str, str]]:
    """(where, text) of every string literal in the package; f-strings with their fields as '{}'."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        inside_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstring:
                text = node.value
            else:
                continue
            found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", text))
    return found


def _tree() -> tuple[object, set[str]]:
    root = typer.main.get_command(app)
    every_option: set[str] = set()

    def walk(command: object) -> None:
        every_option.update(_options(command))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(root)
    return root, every_option


def _options(command: object) -> set[str]:
    return {name for param in command.params for name in [*param.opts, *param.secondary_opts]}


def _resolve(root: object, words: list[str]) -> tuple[object | None, list[str]]:
    """The command that `alnvid <words>` runs, and the words after its name; None for an unknown command."""
    command = root
    for i, word in enumerate(words):
        subs = getattr(command, "commands", None)
        if not subs:
            return command, words[i:]
        if word not in subs:
            return None, words[i:]
        command = subs[word]
    return command, []


def _problems() -> list[str]:
    root, every_option = _tree()
    problems = []
    for where, text in _texts():
        if ARGV_ITEM.fullmatch(text):
            continue
        for match in COMMAND.finditer(text):
            words = match.group(1).split()
            command, _ = _resolve(root, words)
            if command is None and words[0] not in PROSE:
                problems.append(f"{where}: `alnvid{match.group(1)}` names no command: {text!r}")
        quoted = BACKTICKED.findall(text)
        for snippet in quoted:
            words = snippet.split()
            if not words or words[0] != "alnvid":
                continue  # another tool's command line (gdcmconv --raw) or a Python name
            command, rest = _resolve(root, words[1:])
            if command is not None:
                problems += [f"{where}: `{snippet}`: {option} is not an option of that command"
                             for option in OPTION.findall(" ".join(rest)) if option not in _options(command)]
        unquoted = BACKTICKED.sub(" ", text)
        problems += [f"{where}: {option} is not an option of any command: {text!r}"
                     for option in OPTION.findall(unquoted) if option not in every_option]
    return problems


def test_the_checker_finds_wrong_commands_and_options():
    root, every_option = _tree()
    assert _resolve(root, ["evaluate"])[0] is None
    assert _resolve(root, ["cohort", "check"])[0].name == "check"
    assert "--folds" in _options(_resolve(root, ["cv"])[0]) and "--allow-modality" in every_option
    assert "--no-ci" not in every_option


def test_every_named_command_and_option_exists():
    texts = _texts()
    assert any("alnvid cohort check" in t for _, t in texts)  # the scan sees the messages
    problems = _problems()
    assert not problems, "\n".join(problems)


def test_fit_and_cv_take_every_shared_training_option_and_pass_it_on(monkeypatch):
    """`with_training_options` gives both commands each TRAINING_OPTIONS option; a value given on the command line
    reaches the command's `training` dict, and options not given arrive as their defaults."""
    from typer.testing import CliRunner

    from alnvid.cli.train import TRAINING_OPTIONS

    root = typer.main.get_command(app)
    shared = {name for shared in TRAINING_OPTIONS.values()
              for declaration in shared.option.param_decls for name in declaration.split("/")}
    assert shared <= _options(root.commands["fit"]) and shared <= _options(root.commands["cv"])
    seen = {}

    def stop(config, fast_settings, overrides):
        seen.update(config=config, fast=fast_settings, overrides=overrides)
        raise SystemExit(0)

    monkeypatch.setattr("alnvid.config.resolve_config", stop)
    for command in ("fit", "cv"):
        seen.clear()
        result = CliRunner().invoke(app, [command, "--data", "cohort.csv", "--frames", "8", "--eval-flip",
                                          "--logger", "csv", "--seed", "3", "--out", "run"])
        assert result.exit_code == 0, result.output
        assert seen["config"] is None and seen["fast"] is False
        assert {k: seen["overrides"][k] for k in ("data.manifest", "data.frames", "data.eval_flip", "trainer.loggers",
                                                   "data.seed", "trainer.seed", "out", "optim.lr")} == {
            "data.manifest": "cohort.csv", "data.frames": 8, "data.eval_flip": True, "trainer.loggers": "csv",
            "data.seed": 3, "trainer.seed": 3, "out": "run", "optim.lr": None}


def test_every_shared_training_option_names_a_setting_of_the_configuration():
    """Each option's configuration key (`SharedOption.key`, `COMMAND_KEYS`) is a field of RunConfig: a misspelt key
    would otherwise only fail when a user gives that option."""
    from alnvid.cli.train import COMMAND_KEYS, TRAINING_OPTIONS
    from alnvid.config import RunConfig

    keys = [shared.key for shared in TRAINING_OPTIONS.values() if shared.key] + list(COMMAND_KEYS.values())
    assert len(keys) == 30
    for dotted in keys:
        *sections, name = dotted.split(".")
        target = RunConfig()
        for section in sections:
            target = getattr(target, section)
        assert name in {f.name for f in dataclasses.fields(target)}, dotted
