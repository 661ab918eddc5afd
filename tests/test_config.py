from pathlib import Path

import pytest

from brain_tumor.config import load_config, save_config


def test_overrides_are_typed() -> None:
    cfg = load_config(overrides=["train.lr=3e-4", "model.freeze_layers=15", "data.oversample=true",
                                 "train.threads=2"])
    assert cfg.train.lr == 3e-4 and cfg.model.freeze_layers == 15 and cfg.data.oversample is True
    assert cfg.train.threads == 2


@pytest.mark.parametrize("override, message", [("train.nope=1", "no setting"), ("lr=1", "section.key"),
                                               ("model.freeze_layers=500", "0..175"),
                                               ("model.weights=imagenet21k", "unknown")])
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(overrides=[override])


def test_round_trip(tmp_path: Path) -> None:
    cfg = load_config(overrides=["train.max_epochs=3"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
