"""Recipe options of the search (issue 15): AdamW, warm-up + cosine, label smoothing, MixUp/CutMix."""

import math

import pytest
import torch
from torch import nn

from brain_tumor.config import load_config
from brain_tumor.data.counterfactual import ERASED
from brain_tumor.model import build_classifier, freeze_first_keras_layers
from brain_tumor.model.backbone import preprocessing_for
from brain_tumor.training.losses import counterfactual_loss
from brain_tumor.training.module import SliceClassifier, batch_mixer, warmup_cosine


def _module(**options: object) -> SliceClassifier:
    torch.manual_seed(0)
    network = build_classifier("none", 3)
    freeze_first_keras_layers(network, 15)
    return SliceClassifier(network, preprocessing_for("none", 32), channels_last=False, **options)  # type: ignore[arg-type]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (6, 1, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.tensor([0, 1, 2, 0, 1, 2])


def test_warmup_cosine_rises_then_falls_to_zero() -> None:
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = warmup_cosine(optimizer, total_steps=100, warmup_steps=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-4)  # a tenth of the rate at the first step
    assert lrs[10] == pytest.approx(1e-3)  # the full rate when warm-up ends
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert lrs[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_label_smoothing_changes_the_training_loss_but_not_validation() -> None:
    images, labels = _batch()
    plain, smoothed = _module().eval(), _module(label_smoothing=0.2).eval()
    with torch.no_grad():
        logits = plain(images).float()
        expected = nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
        assert smoothed.training_step((images, labels), 0) == pytest.approx(float(expected), rel=1e-5)
        assert plain.training_step((images, labels), 0) != pytest.approx(float(expected), rel=1e-3)
        assert smoothed._step((images, labels), "val") == pytest.approx(
            float(nn.functional.cross_entropy(logits, labels)), rel=1e-5)


def test_smoothing_with_erased_slices_takes_the_counterfactual_loss() -> None:
    images, _ = _batch()
    labels = torch.tensor([0, ERASED, 2, 0, ERASED, 2])  # plain cross-entropy would fail on label -1
    module = _module(label_smoothing=0.1).eval()
    with torch.no_grad():
        logits = module(images).float()
        assert module.training_step((images, labels), 0) == pytest.approx(
            counterfactual_loss(logits, labels, label_smoothing=0.1).item(), rel=1e-5)
        assert module._step((images, labels), "val") == pytest.approx(
            counterfactual_loss(logits, labels).item(), rel=1e-5)  # validation stays unsmoothed


def test_mixup_trains_on_soft_targets() -> None:
    mixer = batch_mixer(1.0, 3)
    torch.manual_seed(3)
    x, targets = mixer(torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert targets.shape == (6, 3) and torch.allclose(targets.sum(1), torch.ones(6))
    assert ((targets > 0) & (targets < 1)).any()  # at least one target is a mixture
    module = _module(mixup_alpha=0.4).train()
    seen: list[torch.Tensor] = []
    assert isinstance(module.mix, nn.Module)  # torchvision's transforms are modules: watch its output
    module.mix.register_forward_hook(lambda m, inputs, out: seen.append(out[1]))
    loss = module.training_step(_batch(), 0)
    loss.backward()
    assert len(seen) == 1 and seen[0].shape == (6, 3)  # the step trained on the mixer's soft targets
    assert torch.isfinite(loss) and module.network.fc.weight.grad is not None


def test_adamw_and_cosine_are_chosen_from_the_settings() -> None:
    module = _module(optimizer="adamw", schedule="cosine", warmup_epochs=1, weight_decay=0.05)

    class Trainer:  # what configure_optimizers reads from Lightning's trainer
        estimated_stepping_batches = 40
        max_epochs = 4

    module._trainer = Trainer()  # type: ignore[assignment]
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert config["optimizer"].param_groups[0]["weight_decay"] == 0.05
    assert config["lr_scheduler"]["interval"] == "step"
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.SequentialLR)
    assert scheduler._milestones == [10]  # one of four epochs of 40 steps: 10 warm-up steps
    paper = _module().configure_optimizers()
    assert type(paper["optimizer"]) is torch.optim.Adam
    assert isinstance(paper["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)


@pytest.mark.parametrize("override, message", [
    (["train.optimizer=sgd"], "train.optimizer"), (["train.schedule=step"], "train.schedule"),
    (["train.warmup_epochs=1"], "needs train.schedule=cosine"),
    (["train.schedule=cosine", "train.max_epochs=2", "train.warmup_epochs=2"], "warmup_epochs"),
    (["train.label_smoothing=1.0"], "label_smoothing"), (["train.mixup_alpha=-1"], "mixup_alpha"),
    (["train.mixup_alpha=0.2", "train.counterfactual=0.2"], "cannot be combined"),
    (["train.counterfactual=0.6"], "train.counterfactual must be"),
    (["train.mixup_alpha=0.2", "train.class_weighted_loss=true"], "class_weighted_loss")])
def test_bad_recipe_settings_are_refused(override: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(overrides=override)
