import pytest
import torch

from brain_tumor.model import build_classifier, freeze_first_keras_layers
from brain_tumor.model.backbone import preprocessing_for
from brain_tumor.model.freezing import keras_frozen_modules
from brain_tumor.training.module import SliceClassifier


@pytest.mark.parametrize("n, frozen, last", [(30, 171_328, "layer1.2.conv1"), (15, 83_520, "layer1.0.conv3"),
                                              (0, 0, None)])
def test_paper_scenarios_freeze_the_keras_layers(n: int, frozen: int, last: str | None) -> None:
    model = build_classifier("none", 3)
    report = freeze_first_keras_layers(model, n)
    assert report.frozen_parameters == frozen
    assert report.frozen_parameters + report.trainable_parameters == sum(p.numel() for p in model.parameters())
    assert (report.frozen_modules[-1] if report.frozen_modules else None) == last


def test_freeze_15_leaves_bn3_and_downsample_bn_trainable() -> None:
    names = keras_frozen_modules(15)
    assert "layer1.0.downsample.0" in names and "layer1.0.bn3" not in names
    assert "layer1.0.downsample.1" not in names


def test_frozen_batchnorm_runs_in_inference_mode_during_training() -> None:
    network = build_classifier("none", 3)
    freeze_first_keras_layers(network, 30)
    module = SliceClassifier(network, preprocessing_for("none", 32), channels_last=False).train()
    frozen_bn, trainable_bn = network.bn1, network.layer1[2].bn1
    assert not frozen_bn.training and trainable_bn.training
    before = frozen_bn.running_mean.clone()
    images = torch.randint(0, 255, (4, 1, 32, 32), dtype=torch.uint8)
    loss = module.training_step((images, torch.tensor([0, 1, 2, 0])), 0)
    loss.backward()
    assert torch.equal(frozen_bn.running_mean, before)
    assert network.conv1.weight.grad is None and network.layer1[2].conv2.weight.grad is not None


def test_out_of_range() -> None:
    with pytest.raises(ValueError):
        keras_frozen_modules(176)


def test_torchvision_weights_from_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from torchvision.models import resnet50

    reference = resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    model = build_classifier("torchvision", 3, tmp_path / "tv.pth")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.layer2[0].conv2.stride == (2, 2)  # torchvision's v1.5 layout kept
    assert model.fc.out_features == 3
