from pathlib import Path

from brain_tumor.evaluation.report import comparison_html, comparison_markdown


def fake_run(acc: float) -> dict:
    classes = ("glioma", "meningioma", "pituitary")
    return {"accuracy": acc, "val_accuracy": 0.9, "macro_auc": 0.99, "frozen_parameters": 1, "trainable_parameters": 2,
            "epochs": 3, "best_epoch": 2, "train_seconds": 120.0, "support": dict.fromkeys(classes, 10),
            **{k: dict.fromkeys(classes, 0.5) for k in ("precision", "recall", "f1", "auc")}}


def test_paper_numbers_beside_ours() -> None:
    md = comparison_markdown({30: fake_run(0.95), 15: fake_run(0.96)})
    assert "| freeze 30 | accuracy | 0.9088 | 0.9500 |" in md
    assert "| freeze 15 | meningioma_recall | 0.6800 | 0.5000 |" in md
    assert md.index("freeze 30") < md.index("freeze 15")
    html = comparison_html({15: fake_run(0.96)}, [])
    assert "<td>0.9186</td><td>0.9600</td>" in html and "<script" not in html


def test_robustness_overview_embeds_tables_and_figures(tmp_path: Path) -> None:
    from brain_tumor.robustness import robustness_overview, shift_markdown

    results = {"paper": {"clean": 0.9, "shifts": {"gamma": [("1.5", 0.5)]}, "mean_drop": {"gamma": 0.4}},
               "robust": {"clean": 0.9, "shifts": {"gamma": [("1.5", 0.85)]}, "mean_drop": {"gamma": 0.05}}}
    folder = tmp_path / "fold-1"
    (folder / "ood-paper").mkdir(parents=True)
    (folder / "shift.md").write_text(shift_markdown(results, 10))
    (folder / "ood-paper" / "ood.md").write_text("# OOD\n| inputs | n |\n")
    md, html = robustness_overview(tmp_path)
    assert "| gamma | 1.5 | 0.500 | 0.850 |" in md and "ood-paper" in md and "<pre>" in html
    assert robustness_overview(tmp_path / "empty") == ("", "")
