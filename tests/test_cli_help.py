"""Every command explains itself with an example, and names a model and its output the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from brain_tumor.cli import app

COMMANDS = typer.main.get_command(app)
NAMES = sorted(COMMANDS.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", NAMES)
def test_help_shows_an_example(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"`brain-tumor {name} --help` shows no example"


def test_every_command_that_takes_a_model_takes_it_as_checkpoint_or_m() -> None:
    takes_model = []
    for name in NAMES:
        for param in COMMANDS.commands[name].params:  # type: ignore[attr-defined]
            if param.name in ("checkpoint", "model", "ckpt"):
                assert param.param_type_name == "option", f"{name}: the model is positional"
                assert {"--checkpoint", "-m"} <= set(param.opts), f"{name}: model option is {param.opts}"
                takes_model.append(name)
    assert {"predict", "serve", "evaluate", "export", "explain", "trust", "ood", "shift-test", "shortcut-test",
            "no-tumour-gate"} <= set(takes_model)


# the commands that take no --output, and why: every other command writes a folder or file named by --output/-o
NO_OUTPUT = {
    "fetch": "writes where the settings look for what it fetches (data.root, model.weights_path)",
    "serve": "writes nothing",
    "compare": "prints its result",
    "predict": "writes the files it is given: --csv, --json, --group-csv, --cam-dir",
    "prepare": "SOURCE OUTPUT, both positional, as cp takes them",
    "report": "rebuilds the results folder it is given, in place",
    "trust": "writes trust/ into the run folder it reads (--run-dir)",
}
# names an output went by before --output; where they are still taken, only as a second name of --output
OTHER_OUTPUT_NAMES = {"--out", "--out-dir", "--output-dir", "--outdir", "--results-dir", "--result-dir"}
NOT_OUTPUTS = {("report", "--results-dir")}  # the finished runs' folder that report reads and rebuilds


def _option(name: str, flag: str) -> Any:
    """The command's option that takes ``flag``, or None."""
    params = COMMANDS.commands[name].params  # type: ignore[attr-defined]
    return next((p for p in params if p.param_type_name == "option" and flag in p.opts), None)


@pytest.mark.parametrize("name", NAMES)
def test_every_command_that_writes_names_its_output_output_or_o(name: str) -> None:
    output = _option(name, "--output")
    if name in NO_OUTPUT:
        assert output is None, f"{name} takes --output now: take it out of NO_OUTPUT"
        return
    assert output is not None, f"`brain-tumor {name}` takes no --output (if it writes nothing, say why in NO_OUTPUT)"
    assert output.opts[:2] == ["--output", "-o"], f"{name}: its output is {output.opts}"


@pytest.mark.parametrize("name", NAMES)
def test_no_command_names_its_output_another_way(name: str) -> None:
    for param in COMMANDS.commands[name].params:  # type: ignore[attr-defined]
        other = {flag for flag in OTHER_OUTPUT_NAMES & set(param.opts) if (name, flag) not in NOT_OUTPUTS}
        assert not other or "--output" in param.opts, f"{name}: {sorted(other)} is not a second name of --output"


@pytest.mark.parametrize("name", ["train", "cv", "reproduce"])
def test_results_dir_is_still_a_name_of_the_output(name: str) -> None:
    output = _option(name, "--output")
    assert output is not None and "--results-dir" in output.opts
    for flag in ("--output", "-o", "--results-dir"):
        parsed = COMMANDS.commands[name].make_context(name, [flag, "elsewhere"]).params  # type: ignore[attr-defined]
        assert parsed[output.name] == Path("elsewhere"), f"{name} {flag}"


def test_progress_bars_are_sparse_in_a_log_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging
    import os
    import sys

    from brain_tumor.cli import main

    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # so that monkeypatch restores the variable afterwards
    monkeypatch.delenv("TQDM_MININTERVAL")
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))  # restored too
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a file, not a terminal
    main(verbose=False)
    assert os.environ["TQDM_MININTERVAL"] == "30"
