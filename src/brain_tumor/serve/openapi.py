"""Write the service's OpenAPI document (committed as docs/openapi.json, so that a change of the
contract shows in review): ``python -m brain_tumor.serve.openapi docs/openapi.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from brain_tumor.atomic import write_text


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document as plain JSON data (independent of the loaded model)."""
    document: dict[str, Any] = json.loads(json.dumps(app.openapi()))
    return document


def main(argv: list[str]) -> None:
    import tempfile

    import torch

    from brain_tumor.config import RunConfig, to_dict
    from brain_tumor.model import build_classifier, preprocessing_for
    from brain_tumor.serve.app import ServiceSettings, create_app
    from brain_tumor.training.checkpoint import save_model_checkpoint

    out = Path(argv[0] if argv else "docs/openapi.json")
    with tempfile.TemporaryDirectory() as tmp:  # the document does not depend on the weights
        torch.manual_seed(0)
        checkpoint = save_model_checkpoint(
            Path(tmp) / "model.pt", build_classifier("none", 3).eval(), architecture="resnet50-v1",
            class_names=["glioma", "meningioma", "pituitary"], preprocessing=preprocessing_for("keras", 64),
            config=to_dict(RunConfig()), epoch=0, metrics={})
        document = openapi_document(create_app(ServiceSettings(checkpoint)))
    write_text(out, json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
