from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brain_tumor.inference import Predictor
from tests.conftest import DATA, needs_data, synthetic_slice
from tests.test_imageio import _dicom, bad_files


def test_predict_array(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    p = predictor.predict(synthetic_slice(np.random.default_rng(0), 1, 80) / 255.0)
    assert set(p.probabilities) == {"glioma", "meningioma", "pituitary"}
    assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert p.predicted == max(p.probabilities, key=p.probabilities.get)  # type: ignore[arg-type]
    assert p.calibrated is False and p.refer is False


def test_batch_goes_on_past_bad_files(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bad = bad_files(tmp_path)
    good = tmp_path / "good.jpg"  # written by bad_files
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    predictor.scope_check = False  # decoding under test; the gradient is no MRI slice (see test_scope)
    predictions = list(predictor.predict_files([*bad.values(), good]))
    assert len(predictions) == len(bad) + 1
    assert [p.error is None for p in predictions] == [False] * len(bad) + [True]
    assert all("\n" not in (p.error or "") for p in predictions)


def test_multiframe_dicom_is_predicted_per_frame(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _dicom(tmp_path / "multi.dcm", np.zeros((64, 64), np.uint16))
    import pydicom

    ds = pydicom.dcmread(path)
    frames = (np.arange(3 * 64 * 64) % 500).astype(np.uint16).reshape(3, 64, 64)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.save_as(path)
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    predictor.scope_check = False  # frames of a ramp, not MRI slices: the frames are under test
    sources = [p.source for p in predictor.predict_files([path])]
    assert sources == [f"{path}#frame{i}" for i in range(3)]


def test_calibration_in_an_older_checkpoint_sets_refer(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Checkpoints written before calibration moved beside them hold it inside; it still applies."""
    import torch

    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["calibration"] = {"temperature": 2.0, "refer_threshold": 1.01}
    ckpt = tmp_path / "m.pt"
    torch.save(payload, ckpt)
    predictor = Predictor.from_checkpoint(ckpt)
    p = predictor.predict(np.full((64, 64), 0.5, np.float32))
    assert predictor.temperature == 2.0 and p.calibrated and p.refer
    assert p.confidence <= max(p.probabilities.values())  # T > 1 softens


@needs_data
def test_real_slices_from_every_class(tiny_checkpoint: Path) -> None:
    files = [DATA / "glioma" / "1841.jpg", DATA / "meningioma" / "1.jpg"]
    predictions = list(Predictor.from_checkpoint(tiny_checkpoint).predict_files(files))
    assert all(p.error is None for p in predictions)
    assert Image.open(files[0]).size == (512, 512)


def test_flip_tta_averages_the_slice_and_its_mirror(tiny_checkpoint: Path) -> None:
    import torch

    from brain_tumor.model_loading import load_predictor

    plain = load_predictor(tiny_checkpoint, precision="fp32", engine="pytorch")
    flip = load_predictor(tiny_checkpoint, precision="fp32", engine="pytorch", tta="flip")
    rng = np.random.default_rng(3)
    batch = torch.stack([plain.to_tensor(synthetic_slice(rng, k) / 255.0) for k in range(3)])
    expected = (plain.logits(batch) + plain.logits(batch.flip(-1))) / 2
    assert torch.allclose(flip.logits(batch), expected, atol=1e-5)
    assert not torch.allclose(flip.logits(batch), plain.logits(batch), atol=1e-5)  # the mirror counts
    symmetric = torch.cat([batch[..., :32], batch[..., :32].flip(-1)], dim=-1)  # its own mirror: no change
    assert torch.allclose(flip.logits(symmetric), plain.logits(symmetric), atol=1e-4)
    assert flip.compute["tta"] == "flip" and flip.predict_batch(batch, ["a", "b", "c"])[0].probabilities
    with pytest.raises(ValueError, match="unknown"):
        plain.use_tta("rotate")


def test_a_checkpoint_is_read_once_until_it_changes(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os
    import shutil

    import torch

    from brain_tumor.training import checkpoint as ck

    path = tmp_path / "model.pt"
    shutil.copy(tiny_checkpoint, path)
    reads: list[str] = []
    real = ck.read_checkpoint
    monkeypatch.setattr(ck, "read_checkpoint", lambda p: reads.append(str(p)) or real(p))
    first = ck.load_checkpoint(path)
    assert ck.load_checkpoint(path) is first and len(reads) == 1  # check, describe, load: one read
    assert first.class_names == ["glioma", "meningioma", "pituitary"] and first.preprocessing.image_size == 64
    assert isinstance(first.build(), torch.nn.Module) and "state_dict" not in first.meta
    ck.write_ood_companion(path, torch.ones(4, 8), method="knn-cosine", k=2, threshold=0.5, flag_rate=0.05,
                        fitted_on="validation slices")
    with_ood = ck.load_checkpoint(path)  # a detector written beside it is a new version
    assert len(reads) == 2 and with_ood.ood is not None and with_ood.ood["k"] == 2
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file itself replaced
    ck.load_checkpoint(path)
    assert len(reads) == 3


def test_a_built_network_has_the_checkpoint_weights_in_its_own_memory(tiny_checkpoint: Path) -> None:
    import dataclasses

    import torch

    from brain_tumor.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    network = checkpoint.build()
    state = network.state_dict()
    assert set(state) == set(checkpoint.state_dict) and not network.training
    for name, tensor in checkpoint.state_dict.items():
        assert torch.equal(state[name], tensor) and not state[name].is_meta, name
    with torch.no_grad():  # changing the network (BN adaptation, fine-tuning) leaves the cached checkpoint alone
        network.fc.weight.add_(1.0)
    assert not torch.equal(network.fc.weight, checkpoint.state_dict["fc.weight"])
    partial = dataclasses.replace(checkpoint, state_dict={k: v for k, v in checkpoint.state_dict.items()
                                                          if not k.startswith("layer4.2.")})
    with pytest.raises(RuntimeError, match="layer4.2"):  # nothing is left uninitialised on the meta device
        partial.build()
    half = dataclasses.replace(checkpoint, state_dict={k: v.half() if v.is_floating_point() else v
                                                       for k, v in checkpoint.state_dict.items()})
    assert {t.dtype for t in half.build().parameters()} == {torch.float32}  # as copying into fp32 weights did
