"""The built wheel carries what a non-editable install needs: the web page the service serves at
``GET /`` and the type marker; installed on its own, the service finds its page inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel (about 20 s)


def test_wheel_installs_the_page_the_service_serves(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")  # the build backend, used without an isolated build (offline)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("brain_tumor-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"brain_tumor/serve/static/index.html", "brain_tumor/py.typed"} <= names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import brain_tumor, brain_tumor.serve.app as app; "
             "print(brain_tumor.__file__); print((app.STATIC / 'index.html').is_file())")
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed wheel before the editable checkout
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env,
                         cwd=tmp_path).stdout.split()
    assert Path(out[0]).is_relative_to(target)  # the wheel's copy was imported, not src/
    assert out[1] == "True"
