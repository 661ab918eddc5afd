"""The ``brain-tumor`` command line: thin shells over the library.

The app and its ``--verbose`` callback live here; each group of commands is a module of its own
(``common``: the option types and helpers they share), registered below in ``--help`` order.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from brain_tumor.cli.data import fetch, prepare
from brain_tumor.cli.deploy import export, serve
from brain_tumor.cli.evaluation import evaluate, shift_test, shortcut_test
from brain_tumor.cli.experiments import compare, cv, ensemble, leaderboard, report, reproduce, train
from brain_tumor.cli.prediction import explain, predict
from brain_tumor.cli.safety import calibrate, no_tumour_gate, ood, trust

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Classify brain-tumour MRI slices with a fine-tuned ResNet-50, and prove how well it does.")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Set up logging; progress bars redrawn at most every 30 s when stderr is a log file, not a
    terminal (tqdm reads ``TQDM_MININTERVAL`` when first imported, which the commands do lazily)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, force=True,
                        format="%(levelname)s %(name)s: %(message)s")


# in this order in --help
app.command()(prepare)
app.command()(fetch)
app.command()(reproduce)
app.command()(train)
app.command()(evaluate)
app.command()(predict)
app.command()(explain)
app.command()(trust)
app.command()(export)
app.command()(serve)
app.command()(cv)
app.command()(calibrate)
app.command("no-tumour-gate")(no_tumour_gate)
app.command()(compare)
app.command()(leaderboard)
app.command()(ensemble)
app.command()(report)
app.command("shift-test")(shift_test)
app.command("shortcut-test")(shortcut_test)
app.command()(ood)
