import numpy as np
import pytest

from brain_tumor.evaluation.statistics import accuracy, bootstrap_ci, class_recall, mcnemar, patient_level


def test_patient_level_averages_probabilities() -> None:
    y = np.array([0, 0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    labels, probs = patient_level(y, p, ["a", "a", "b"])
    assert labels.tolist() == [0, 1]
    np.testing.assert_allclose(probs[0], [0.55, 0.45])


def test_bootstrap_resamples_patients_not_slices() -> None:
    # one patient with 50 wrong slices, 10 patients with one right slice each
    y = np.zeros(60, int)
    p = np.tile([1.0, 0.0], (60, 1))
    p[:50] = [0.0, 1.0]
    groups = ["bad"] * 50 + [f"p{i}" for i in range(10)]
    point, low, high = bootstrap_ci(accuracy, y, p, groups, n_boot=500)
    assert point == pytest.approx(10 / 60)
    assert low < 0.15 and high == 1.0  # the whole patient is in or out; a slice bootstrap would stay near 0.17


def test_mcnemar() -> None:
    a = np.array([True] * 20 + [False] * 2 + [True] * 50)
    b = np.array([False] * 20 + [True] * 2 + [True] * 50)
    result = mcnemar(a, b)
    assert result["a_right_b_wrong"] == 20 and result["a_wrong_b_right"] == 2
    assert result["p_value"] < 0.001
    assert mcnemar(a, a)["p_value"] == 1.0


def test_class_recall() -> None:
    y = np.array([1, 1, 0])
    p = np.array([[0.1, 0.9], [0.8, 0.2], [0.9, 0.1]])
    assert class_recall(1)(y, p) == 0.5


def test_paired_fold_test() -> None:
    from brain_tumor.evaluation.statistics import paired_fold_test

    assert paired_fold_test([0.9, 0.91, 0.92], [0.9, 0.91, 0.92]) == 1.0
    assert paired_fold_test([0.90, 0.91, 0.92, 0.93, 0.94], [0.80, 0.82, 0.81, 0.83, 0.80]) < 0.01


def test_cv_overview_reports_leakage_and_freeze_comparison(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from brain_tumor.config import RunConfig, apply_overrides, save_config
    from brain_tumor.cv import summarise
    from brain_tumor.cv_report import cv_overview
    from brain_tumor.data.manifest import CLASS_NAMES
    from brain_tumor.evaluation.run_eval import write_predictions

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 100)
    groups = [f"p{i // 4}" for i in range(100)]
    paths = [f"s{i}.jpg" for i in range(100)]
    # the folders' names say nothing: what each CV is comes from its config and its summary's grouping
    for name, freeze, grouping, skill in [("plain", 15, "official", 0.8), ("deeper", 30, "official", 0.7),
                                          ("leaky", 15, "slice", 0.95)]:
        right = rng.random(100) < skill
        pred = np.where(right, y, (y + 1) % 3)
        probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
        folds = []
        for k in range(5):
            sel = slice(20 * k, 20 * (k + 1))
            write_predictions(tmp_path / name / f"fold-{k + 1}" / "test_predictions.csv", paths[sel], y[sel],
                              probs[sel], list(CLASS_NAMES))
            folds.append({"accuracy": float(right[sel].mean()), "macro_f1": 0.5})
        summary = summarise(y, probs, groups, folds, n_boot=50)
        summary.update({"grouping": grouping, "folds": 5})
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        save_config(apply_overrides(RunConfig(), [f"model.freeze_layers={freeze}", f"data.root={tmp_path}"]),
                    tmp_path / name / "config.yaml")
    md, html = cv_overview(tmp_path)
    assert "Leakage" in md and "points of accuracy" in md and "McNemar" in md and "paired t-test" in md
    assert "slice-level folds (leaky) than with the official patient-wise folds (plain)" in md
    assert html.count("<table>") == 2
    variant_row = next(line for line in md.splitlines() if line.startswith("| deeper | plain | 100 |"))
    assert variant_row.count("n/a") == 2  # no dataset for patient ids here: no difference CIs
    assert not any(line.startswith("| leaky | plain") for line in md.splitlines())  # slice-level: no variant
    assert cv_overview(tmp_path / "none") == ("", "")


def test_paired_bootstrap_difference() -> None:
    from brain_tumor.evaluation.statistics import paired_bootstrap_difference

    y = np.tile([0, 1], 50)
    good = np.eye(2)[y]
    coin = np.eye(2)[np.where(np.arange(100) % 4 == 0, 1 - y, y)]  # 25% wrong
    groups = [f"p{i // 5}" for i in range(100)]
    assert paired_bootstrap_difference(accuracy, y, good, good, groups, n_boot=200) == (0.0, 0.0, 0.0)
    point, low, high = paired_bootstrap_difference(accuracy, y, good, coin, groups, n_boot=200)
    assert point == pytest.approx(0.25) and 0 < low <= point <= high


def test_bootstrap_mean_and_shift_statistics() -> None:
    from brain_tumor.evaluation.statistics import bootstrap_mean
    from brain_tumor.robustness import shift_statistics

    groups = [f"p{i // 4}" for i in range(40)]
    point, low, high = bootstrap_mean(np.r_[np.ones(20), np.zeros(20)], groups)
    assert point == 0.5 and 0.1 < low < 0.5 < high < 0.9
    assert bootstrap_mean(np.ones(40), groups) == (1.0, 1.0, 1.0)
    labels = np.arange(40) % 3
    wrong = (labels + 1) % 3
    predictions = {  # "fragile" loses every slice under gamma, half under noise; "steady" loses nothing
        "fragile": {"clean": labels, "gamma/a": wrong, "gamma/b": wrong,
                    "noise/a": np.where(np.arange(40) < 20, labels, wrong)},
        "steady": {"clean": labels, "gamma/a": labels, "gamma/b": labels, "noise/a": labels}}
    stats = shift_statistics(predictions, labels, groups)
    assert stats["drop"]["fragile"]["gamma"] == (1.0, 1.0, 1.0)
    assert stats["drop"]["fragile"]["noise"][0] == 0.5
    assert stats["drop"]["steady"]["gamma"] == (0.0, 0.0, 0.0)
    diff = stats["drop_vs_fragile"]["steady"]
    assert diff["gamma"] == (-1.0, -1.0, -1.0) and diff["noise"][2] < 0


def test_variants_are_compared_with_the_plain_recipe_of_the_same_budget() -> None:
    from brain_tumor.config import RunConfig, apply_overrides, to_dict
    from brain_tumor.cv_report import baselines

    def config(*overrides: str) -> dict:
        return to_dict(apply_overrides(RunConfig(), ["model.freeze_layers=15", "data.image_size=128", *overrides]))

    long = ["train.max_epochs=12", "train.precision=bf16-mixed"]
    robust = ["data.preprocessing=robust", "data.augmentation=robust"]
    configs = {"official-freeze-15": config("train.max_epochs=6"),
               "official-freeze-30": config("train.max_epochs=6", "model.freeze_layers=30"),
               "official-freeze-15-bf16-e12": config(*long),
               "official-freeze-15-robust-bf16-e12": config(*long, *robust),
               "official-robust-e20": config("train.max_epochs=20", *robust),  # no plain run at 20 epochs
               "official-robust-bf16-e12-ema": config(*long, *robust, "train.ema_decay=0.99"),  # nor with EMA
               "leaky": config("train.max_epochs=6"),  # slice-level folds, by its grouping, not its name
               "official-old": None}
    expected = {"official-freeze-30": "official-freeze-15",
                "official-freeze-15-robust-bf16-e12": "official-freeze-15-bf16-e12"}
    assert baselines(configs, {"leaky": "slice"}) == expected
    assert baselines(configs)["leaky"] == "official-freeze-15"  # patient-wise, it would be a variant


def test_old_configs_get_the_defaults_of_settings_they_predate() -> None:
    from brain_tumor.cv_report import with_defaults

    old = with_defaults({"data": {"image_size": 128}, "train": {"max_epochs": 6}})
    assert old["data"]["image_size"] == 128 and old["data"]["preprocessing"] == "paper"
    assert old["train"]["precision"] == "32-true" and old["model"]["freeze_layers"] == 30
    assert old["train"]["ema_decay"] is None


def test_repeated_bootstrap_difference_averages_seeds_on_shared_resamples() -> None:
    from brain_tumor.evaluation.statistics import paired_bootstrap_difference, repeated_bootstrap_difference

    y = np.zeros(100, int)
    right, wrong = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    a = np.tile(right, (100, 1))
    b1, b2 = a.copy(), a.copy()
    b1[:10], b2[:20] = wrong, wrong  # B loses 10 points with one seed, 20 with the other
    groups = [f"p{i // 5}" for i in range(100)]
    point, low, high = repeated_bootstrap_difference(accuracy, y, [a, a], [b1, b2], groups, n_boot=300)
    assert point == pytest.approx(0.15)
    assert 0 < low < 0.15 < high
    assert repeated_bootstrap_difference(accuracy, y, [a], [b1], groups, n_boot=300) == \
        paired_bootstrap_difference(accuracy, y, a, b1, groups, n_boot=300)
    with pytest.raises(ValueError, match="same, non-zero number"):
        repeated_bootstrap_difference(accuracy, y, [a, a], [b1], groups)


def test_paper_split_overview_pairs_each_recipe_with_the_plain_one_by_budget_and_seed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from brain_tumor.config import RunConfig, apply_overrides, save_config
    from brain_tumor.cv_report import paper_split_overview
    from brain_tumor.data.manifest import CLASS_NAMES
    from brain_tumor.evaluation.run_eval import write_predictions
    from brain_tumor.run_record import RUN_FORMAT

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    paths = [f"s{i}.jpg" for i in range(200)]
    runs = [("plain", [], 42, 0.95), ("plain-again", [], 42, 0.94), ("plain-seed43", [], 43, 0.93),
            ("robust", ["data.augmentation=robust"], 42, 0.85),
            ("robust-seed43", ["data.augmentation=robust"], 43, 0.87),
            ("robust-e12", ["data.augmentation=robust", "train.max_epochs=12"], 42, 0.9)]  # no plain run at 12 epochs
    for name, overrides, seed, skill in runs:
        run = tmp_path / f"paper-split-{name}" / "freeze-15"
        right = rng.random(200) < skill
        pred = np.where(right, y, (y + 1) % 3)
        write_predictions(run / "test_predictions.csv", paths, y, np.eye(3)[pred], list(CLASS_NAMES))
        settings = [*overrides, "model.freeze_layers=15", f"train.seed={seed}", f"data.root={tmp_path}"]
        save_config(apply_overrides(RunConfig(), settings), run / "config.yaml")
        (run / "metrics.json").write_text(json.dumps({"accuracy": float(right.mean()), "macro_f1": 0.5,
                                                      "recall": {"meningioma": 0.5}}))
        (run / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "kind": "paper-split scenario"}))
    decoy = tmp_path / "paper-split-decoy" / "freeze-15"  # named like one, recorded as a CV fold: not a row
    decoy.mkdir(parents=True)
    for f in ("test_predictions.csv", "config.yaml", "metrics.json"):
        (decoy / f).write_bytes((tmp_path / "paper-split-plain" / "freeze-15" / f).read_bytes())
    (decoy / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "kind": "cv fold"}))
    md, html = paper_split_overview(tmp_path)
    assert md.count("| paper-split-") == 6 and html.count("<table>") == 2
    rows = [line for line in md.splitlines() if "robust augmentation" in line and "| 42, 43 |" in line]
    assert len(rows) == 1  # both seeds of the robust recipe against both seeds of the plain one
    assert rows[0].count("p = ") == 3  # seed 42 against each of the plain recipe's two seed-42 runs, seed 43 once
    comparisons = md.split("right only in recipe")[1]
    assert "| freeze 15, paper preprocessing, paper augmentation |" not in comparisons  # plain is never a variant
    difference = float(rows[0].split(" | ")[4].split(" [")[0])
    assert difference < 0  # the robust runs were made worse
    assert "≤12 epochs" not in md.split("right only in recipe")[1]  # no plain run of that budget to compare with
    assert "resample slices" in md  # no manifest here: no patient ids
    assert paper_split_overview(tmp_path / "none") == ("", "")
