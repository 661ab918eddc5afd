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
    from brain_tumor.config import portable, to_dict

    # paths come back relative to the working directory: the same folders
    assert portable(to_dict(load_config(tmp_path / "c.yaml"))) == portable(to_dict(cfg))


def test_saved_config_names_no_machine_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from brain_tumor.config import RunConfig, apply_overrides

    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    cfg = apply_overrides(RunConfig(), [f"data.root={tmp_path / 'shared' / 'data'}", "data.cache_dir=none"])
    save_config(cfg, tmp_path / "repo" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "repo" / "config.yaml").read_text())
    assert saved["data"]["root"] == "../shared/data" and saved["data"]["cache_dir"] is None
    assert load_config(tmp_path / "repo" / "config.yaml").data.root == "../shared/data"  # loads back, relative


def test_recipe_fingerprint_ignores_machine_and_seed_but_not_the_recipe() -> None:
    from brain_tumor.config import RunConfig, apply_overrides, recipe_fingerprint, to_dict

    base = recipe_fingerprint(to_dict(RunConfig()))
    elsewhere = recipe_fingerprint(to_dict(apply_overrides(RunConfig(), [
        "train.seed=7", "train.precision=32-true", "train.threads=3", "data.root=/elsewhere"])))
    assert elsewhere == base and "train.seed" not in base and "data.root" not in base
    assert recipe_fingerprint(to_dict(apply_overrides(RunConfig(), ["train.counterfactual=0.2"]))) != base
    assert recipe_fingerprint({"train": {"lr": 1e-4}}) == base  # an older config: defaults filled in


@pytest.mark.parametrize("key, good, bad, no_mixup", [("counterfactual", 0.2, 0.8, True),
                                                      ("context_mix", 0.3, 1.5, False),
                                                      ("context_penalty", 0.5, -1, True),
                                                      ("tumour_map", 0.5, -1, True)])
def test_tumour_box_settings_are_checked(key: str, good: float, bad: float, no_mixup: bool) -> None:
    """The settings that use the tumour's box: a share or weight in range, on the paper pipeline
    (the box is the manifest's, in its frame), and without mixup where a mixed slice would have
    two boxes or an erased slice no label to mix (context mixing keeps one label and mixes)."""
    from brain_tumor.config import RunConfig, apply_overrides

    assert getattr(apply_overrides(RunConfig(), [f"train.{key}={good}"]).train, key) == good
    with pytest.raises(ValueError, match=key):
        apply_overrides(RunConfig(), [f"train.{key}={bad}"])
    with pytest.raises(ValueError, match="preprocessing"):
        apply_overrides(RunConfig(), [f"train.{key}={good}", "data.preprocessing=robust"])
    mixed = [f"train.{key}={good}", "train.mixup_alpha=0.2"]
    if no_mixup:
        with pytest.raises(ValueError, match="mixup"):
            apply_overrides(RunConfig(), mixed)
    else:
        assert apply_overrides(RunConfig(), mixed).train.mixup_alpha == 0.2
