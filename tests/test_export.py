from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_hardware import SAPPHIRE, ZEN3

from brain_tumor import model_loading
from brain_tumor.export import export_onnx, int8_path, quantize_int8
from brain_tumor.hardware import cpu_info_from
from brain_tumor.inference import Predictor
from brain_tumor.model_loading import find_exports, load_predictor
from brain_tumor.onnx_runtime import OnnxPredictor
from brain_tumor.openvino_runtime import OpenVinoPredictor

pytestmark = pytest.mark.slow  # every test here exports a full ResNet-50 to ONNX


def test_onnx_parity(tiny_checkpoint: Path, tmp_path: Path) -> None:
    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    ours = predictor.logits(x).softmax(1).numpy()
    theirs = torch.from_numpy(OnnxPredictor(onnx_path).logits(x.numpy())).softmax(1).numpy()
    assert theirs.shape == (3, 3)
    assert np.abs(ours - theirs).max() < 1e-4


def test_int8_quantization_is_smaller_and_close(tiny_checkpoint: Path, tmp_path: Path) -> None:
    fp32 = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (32, 1, 64, 64), dtype=np.uint8)
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", calibration)
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights: about a quarter of fp32
    x = rng.integers(0, 256, (8, 1, 64, 64), dtype=np.uint8)
    a, b = OnnxPredictor(fp32).logits(x), OnnxPredictor(int8).logits(x)
    assert b.shape == (8, 3) and np.isfinite(b).all()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    import onnx

    graph = onnx.load(str(int8)).graph
    producers = {o: n for n in graph.node for o in n.output}
    def fed_by_dequantize(node: onnx.NodeProto) -> bool:
        return node.input[0] in producers and producers[node.input[0]].op_type == "DequantizeLinear"
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert not fed_by_dequantize(convs[0]) and all(fed_by_dequantize(c) for c in convs[1:])  # stem fp32
    adds = {n.output[0] for n in graph.node if n.op_type == "Add"}
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert adds and not adds & quantized  # a residual sum is rounded only after its ReLU


def test_predictor_fast_paths_match_pytorch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    x = torch.randint(0, 256, (4, 1, 64, 64), dtype=torch.uint8)
    reference = Predictor.from_checkpoint(tiny_checkpoint).logits(x).softmax(1)
    via_onnx = load_predictor(tiny_checkpoint, onnx=onnx_path)
    assert via_onnx.compute["engine"]["engine"] == "onnx"
    assert (via_onnx.logits(x).softmax(1) - reference).abs().max() < 1e-4
    via_bf16 = load_predictor(tiny_checkpoint, precision="bf16", engine="pytorch")
    assert via_bf16.bf16 and via_bf16.compute["engine"]["precision"] == "bf16-mixed"
    probs = via_bf16.logits(x).softmax(1)
    assert probs.dtype == torch.float32 and (probs - reference).abs().max() < 0.05
    via_fp32 = load_predictor(tiny_checkpoint, precision="fp32", engine="pytorch")
    assert not via_fp32.bf16 and (via_fp32.logits(x).softmax(1) - reference).abs().max() < 1e-5


def test_openvino_runs_the_onnx_export_like_pytorch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    checkpoint = tmp_path / "model.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    with pytest.raises(ValueError, match="no fp32 ONNX export"):
        load_predictor(checkpoint, engine="openvino")
    onnx_path = export_onnx(checkpoint, tmp_path / "model.onnx")  # beside the checkpoint, where it is looked for
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    features, logits = Predictor.from_checkpoint(tiny_checkpoint).embed(x)
    exact = OpenVinoPredictor(onnx_path, threads=1, precision_hint="f32")
    assert exact.has_features and exact.inference_precision == "f32"
    theirs_logits, theirs = exact.outputs(x.numpy())
    assert theirs is not None and theirs.shape == (3, 2048)
    assert np.abs(theirs - features.numpy()).max() < 1e-3 * max(1.0, float(features.abs().max()))
    assert np.abs(torch.from_numpy(theirs_logits).softmax(1).numpy() - logits.softmax(1).numpy()).max() < 1e-4
    own_choice = OpenVinoPredictor(onnx_path)  # bf16 inside where the CPU has it natively
    assert np.abs(torch.from_numpy(own_choice.logits(x.numpy())).softmax(1).numpy()
                  - logits.softmax(1).numpy()).max() < 0.05
    chosen = load_predictor(checkpoint, engine="openvino", precision="fp32")  # a forced precision is OpenVINO's hint
    assert chosen.compute["engine"]["engine"] == "openvino"
    assert chosen.compute["engine"]["inference_precision"] == "f32"
    assert (chosen.logits(x).softmax(1) - logits.softmax(1)).abs().max() < 1e-4
    given = load_predictor(tiny_checkpoint, engine="openvino", onnx=onnx_path).compute["engine"]
    assert given["engine"] == "openvino" and given["onnx_path"] == os.path.relpath(onnx_path)  # the file given


def test_onnx_export_carries_features_for_the_ood_flag(tiny_checkpoint: Path, tmp_path: Path) -> None:
    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    features, _ = Predictor.from_checkpoint(tiny_checkpoint).embed(x)
    session = OnnxPredictor(onnx_path)
    assert session.output_names == ["logits", "features"] and not session.has_evidence  # no map: no evidence
    _, theirs = session.outputs(x.numpy())
    assert theirs is not None and theirs.shape == (3, 2048)
    assert np.abs(theirs - features.numpy()).max() < 1e-3 * max(1.0, float(features.abs().max()))


def test_auto_engine_finds_exports_beside_the_checkpoint_and_ignores_stale_ones(
        tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    checkpoint = tmp_path / "model.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    assert find_exports(checkpoint) == (None, None)
    assert load_predictor(checkpoint).compute["engine"]["engine"] == "pytorch"
    fp32 = export_onnx(checkpoint, tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    int8 = quantize_int8(fp32, int8_path(fp32), rng.integers(0, 256, (16, 1, 64, 64), dtype=np.uint8))
    assert OnnxPredictor(int8).made_from(checkpoint)  # the fingerprint survives quantization
    assert find_exports(checkpoint) == (str(int8), str(fp32))
    monkeypatch.setattr(model_loading, "detect_cpu", lambda: cpu_info_from(ZEN3))  # no AMX: ONNX Runtime int8
    chosen = load_predictor(checkpoint).compute["engine"]
    assert (chosen["engine"], chosen["precision"]) == ("onnx", "int8")
    monkeypatch.setattr(model_loading, "detect_cpu", lambda: cpu_info_from(SAPPHIRE))  # AMX: OpenVINO, fp32 export
    chosen = load_predictor(checkpoint).compute["engine"]
    assert (chosen["engine"], chosen["onnx_path"]) == ("openvino", os.path.relpath(fp32))
    # a retrained checkpoint makes the old exports stale: they are not used
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    assert find_exports(checkpoint) == (None, None)
    assert load_predictor(checkpoint).compute["engine"]["engine"] == "pytorch"


def _map_checkpoint(path: Path, x: torch.Tensor) -> Path:
    """A model with a tumour map whose threshold splits the slices ``x`` in half."""
    from brain_tumor.config import RunConfig, to_dict
    from brain_tumor.model import add_tumour_map, build_classifier
    from brain_tumor.model.backbone import preprocessing_for
    from brain_tumor.training.checkpoint import save_model_checkpoint

    torch.manual_seed(0)
    network = add_tumour_map(build_classifier("none", 3)).eval()
    head = network.tumour_map

    def save(threshold: float) -> Path:
        return save_model_checkpoint(path, network, architecture="resnet50-v1", class_names=["a", "b", "c"],
                                     preprocessing=preprocessing_for("none", 64), config=to_dict(RunConfig()),
                                     epoch=0, metrics={}, extra={"tumour_evidence": {"threshold": threshold}})

    def strongest_logits() -> torch.Tensor:
        return torch.logit(Predictor.from_checkpoint(save(0.5)).forward_parts(x, ("evidence",))["evidence"].double())

    with torch.no_grad():  # a head whose strongest cells spread around 0 on these slices: evidence in (0, 1)
        head.weight.normal_(0, 1e-3)  # type: ignore[union-attr, operator]
        m = strongest_logits()
        scale = 1 / float(m.std())
        head.weight.mul_(scale)  # type: ignore[union-attr, operator]
        head.bias.mul_(scale).sub_(scale * float(m.mean()))  # type: ignore[union-attr, operator]
        middle = torch.sigmoid(strongest_logits()).sort().values[2:4].mean()
    return save(float(middle))  # three slices below, three above


def _old_style_export(checkpoint: Path, output: Path) -> Path:
    """An export as made before the exports carried the tumour map: logits and features only."""
    from brain_tumor.export import ExportWrapper, stamp_fingerprint

    predictor = Predictor.from_checkpoint(checkpoint)
    wrapper = ExportWrapper(predictor.network, predictor.normalize).eval()
    wrapper.with_evidence = False
    torch.onnx.export(wrapper, (torch.rand(1, 1, 64, 64),), str(output), input_names=["image"],
                      output_names=["logits", "features"], dynamic_axes={"image": {0: "batch"}},
                      opset_version=17, dynamo=False)
    stamp_fingerprint(output, checkpoint)
    return output


def test_exports_carry_the_tumour_map_and_every_engine_gives_its_answer(tmp_path: Path) -> None:
    import onnx
    from typer.testing import CliRunner

    from brain_tumor.cli import app
    from brain_tumor.export import export_package

    x = torch.randint(0, 256, (6, 1, 64, 64), dtype=torch.uint8)
    checkpoint = _map_checkpoint(tmp_path / "model.pt", x)
    reference = Predictor.from_checkpoint(checkpoint)
    evidence = reference.forward_parts(x, ("evidence",))["evidence"].numpy()
    expected = [p.predicted for p in reference.predict_batch(x, list("abcdef"))]
    assert expected.count("no_tumour") == 3
    old = _old_style_export(checkpoint, tmp_path / "model.onnx")  # beside it, with the right fingerprint
    assert load_predictor(checkpoint).compute["engine"]["engine"] == "pytorch"  # skipped
    with pytest.raises(ValueError, match="tumour map's evidence"):
        load_predictor(checkpoint, engine="openvino")
    with pytest.raises(ValueError, match="no tumour_evidence output"):
        load_predictor(checkpoint, onnx=old)
    assert not (export_package(checkpoint, tmp_path / "package") / "model.onnx").exists()  # left out
    fp32 = export_onnx(checkpoint, tmp_path / "model.onnx")  # replaces the old export
    session = OnnxPredictor(fp32)
    assert session.output_names == ["logits", "features", "tumour_evidence"] and session.has_evidence
    assert np.abs(session.run(x.numpy(), ["tumour_evidence"])["tumour_evidence"] - evidence).max() < 1e-4
    exact = OpenVinoPredictor(fp32, threads=1, precision_hint="f32")
    assert exact.has_evidence
    assert np.abs(exact.run(x.numpy(), ["tumour_evidence"])["tumour_evidence"] - evidence).max() < 1e-4
    int8 = quantize_int8(fp32, int8_path(fp32), np.random.default_rng(0).integers(0, 256, (16, 1, 64, 64),
                                                                                     dtype=np.uint8))
    graph = onnx.load(str(int8)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    head = next(n for n in convs if "/tumour_map/" in n.name)
    assert producers.get(head.input[1]) != "DequantizeLinear"  # the map's head keeps fp32 weights
    assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs[1:] if c is not head)  # not the rest
    rounded = OnnxPredictor(int8).run(x.numpy(), ["tumour_evidence"])["tumour_evidence"]  # its fidelity on real
    assert rounded.shape == (6,) and ((rounded > 0) & (rounded < 1)).all()  # slices: bench/engines_tumour_map.py
    auto = load_predictor(checkpoint).compute["engine"]  # neither int8 nor OpenVINO's own precision
    assert (auto["engine"], auto["precision"]) == ("onnx", "fp32") and "tumour map" in auto["reason"]
    for engine in ("onnx", "openvino"):  # asked for, the exports beside the checkpoint are used
        chosen = load_predictor(checkpoint, engine=engine, precision="fp32" if engine == "openvino" else "auto")
        assert chosen.onnx is not None and chosen.compute["engine"]["engine"] == engine
        if engine == "openvino":
            answers = chosen.predict_batch(x, list("abcdef"))
            assert [p.predicted for p in answers] == expected
            assert all(p.extra["no_tumour_from"] == "tumour_map" for p in answers if p.predicted == "no_tumour")
    given = load_predictor(checkpoint, onnx=fp32).use_tta("flip")  # the map reads the unflipped slice
    answers = given.predict_batch(x, list("abcdef"))
    assert [p.extra["tumour_evidence"] for p in answers] == pytest.approx(evidence.tolist(), abs=1e-4)
    assert [p.predicted for p in answers] == expected
    result = CliRunner().invoke(app, ["export", "-m", str(checkpoint)])  # the command checks the map's parity
    assert result.exit_code == 0 and "the tumour map travels" in result.output, result.output
