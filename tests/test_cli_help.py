"""Every command explains itself with an example, and names a model the same way."""

from __future__ import annotations

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
