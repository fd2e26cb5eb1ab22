"""The rate-grid plan of the vision study (nlp_ssl/study/protocol.py) and its report, on run folders written here:
rate choice on validation, paired per-seed gains, the flattening check, the compute-matched budget, report_only,
runs read from another study's folder."""

import json

import pytest

from nlp_ssl.config import load_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import Method
from nlp_ssl.study.protocol import (
    COMPUTE_MATCHED_FILE,
    ProtocolConfig,
    ProtocolStudy,
    check_protocol,
    choose_rates,
    compute_matched_steps,
    flattening,
    run_protocol,
    write_report,
)
from nlp_ssl.study.runs import Job, run_job
from nlp_ssl.vision.image_finetuning import FinetuneVisionConfig


def history(losses, every=10, evals=()):
    """A trainer_history: training losses logged every ``every`` steps, and (step, accuracy) evaluations."""
    out = [{"step": every * (i + 1), "train_loss": v} for i, v in enumerate(losses)]
    out += [{"step": s, "eval_loss": 1.0, "eval_accuracy": a} for s, a in evals]
    return sorted(out, key=lambda h: h["step"])


def test_flattening_compares_the_last_window_with_the_one_before():
    # 20 points, steps 10..200: the last window is steps 190-200, the one before 170-180.
    flat = flattening(history([2.0] * 16 + [0.50, 0.50, 0.49, 0.49]), window=0.1, tolerance=0.05)
    assert flat["flattened"] is True and flat["loss_before"] == 0.50 and flat["loss_last"] == 0.49
    falling = flattening(history([2.0] * 16 + [0.50, 0.50, 0.40, 0.40]), window=0.1, tolerance=0.05)
    assert falling["flattened"] is False and falling["relative_drop"] == pytest.approx(0.2)
    assert flattening(history([1.0] * 16 + [0.008] * 2 + [0.001] * 2), 0.1, 0.05)["flattened"] is True  # 0.01 absolute
    # The window that ends at half the steps (90-100) is kept to show the second half.
    assert flattening(history([2.0] * 8 + [1.0] * 2 + [0.6] * 6 + [0.5] * 4), 0.1, 0.05)["loss_mid"] == 1.0
    assert flattening(history([1.0]), 0.1, 0.05)["flattened"] is None  # one logged point: no window before
    assert flattening([], 0.1, 0.05)["flattened"] is None


STEPS = 200  # the main budget the fake runs claim


def methods():
    return {
        "scratch": Method("ViT from scratch", ["model.name_or_path="]),
        "rotation": Method("ViT pretrained: rotation (RotNet)", ["model.name_or_path=x"]),
        "scratch_aux": Method("scratch + aux", ["finetune.aux_task=rotation"]),
        "pixels_logreg": Method("logistic regression on raw pixels", baseline=lambda ft: {"test_accuracy": 0.0}),
    }


def protocol_config(tmp_path, **changes):
    values = dict(output_dir=str(tmp_path), k_per_class=[10], seeds=[0, 1], learning_rates=[1e-3, 5e-4],
                  methods=["scratch", "rotation", "scratch_aux", "pixels_logreg"], lr_from={"scratch_aux": "scratch"},
                  finetune_args=[f"train.max_steps={STEPS}"], speed_k=10, speed_steps=[50], speed_methods=["scratch"],
                  compute_matched="rotation", report_only=True)
    values.update(changes)
    return load_config(ProtocolConfig, overrides=[f"{k}={json.dumps(v)}" for k, v in values.items()])


def fake_run(cfg, job, last, best, val_last, val_best=None, losses=None, runtime=100.0, steps=STEPS):
    """A finished fine-tuning run folder as the recipe leaves it."""
    out = tmp_runs(cfg) / job.name
    out.mkdir(parents=True)
    results = {"steps": steps, "test_accuracy": best, "last_test_accuracy": last, "test_images": 10000,
               "best_step": steps // 2, "train_runtime_s": runtime, "train_tokens_per_s": 5000.0, "train_mfu": 0.1}
    evals = [(steps // 2, val_best if val_best is not None else val_last), (steps, val_last)]
    (out / "trainer_history.json").write_text(json.dumps(history(losses or [2.0] * 16 + [0.5] * 4, steps // 20, evals)))
    (out / "all_results.json").write_text(json.dumps(results))


def tmp_runs(cfg):
    from pathlib import Path

    return Path(cfg.output_dir) / "runs"


def study():
    return ProtocolStudy("Fake study", "finetune_vision", FinetuneVisionConfig, methods(), pretrain_seconds={"rotation": 600.0})


def write_grid(cfg):
    """Two seeds; scratch is best at 1e-3 on validation (mean), rotation at 5e-4; scratch still falling on seed 1."""
    val = {("scratch", 1e-3): (0.60, 0.50), ("scratch", 5e-4): (0.40, 0.58), ("rotation", 1e-3): (0.6, 0.6),
           ("rotation", 5e-4): (0.7, 0.7)}
    test_last = {("scratch", 0): 0.50, ("scratch", 1): 0.56, ("rotation", 0): 0.58, ("rotation", 1): 0.57}
    for (method, rate), per_seed in val.items():
        for seed, v in enumerate(per_seed):
            last = test_last[(method, seed)] + (0 if (method, rate) in (("scratch", 1e-3), ("rotation", 5e-4)) else -0.2)
            losses = [2.0] * 16 + [0.9, 0.9, 0.5, 0.5] if (method, seed) == ("scratch", 1) else None
            fake_run(cfg, Job(method, 10, seed, rate), last=last, best=last + 0.01, val_last=v, val_best=v + 0.05,
                     losses=losses, runtime=100.0 if method == "scratch" else 120.0)
    for seed, acc in enumerate((0.55, 0.52)):
        fake_run(cfg, Job("scratch_aux", 10, seed, 1e-3), last=acc, best=acc, val_last=0.5)
        out = tmp_runs(cfg) / Job("pixels_logreg", 10, seed).name
        out.mkdir(parents=True)
        (out / "all_results.json").write_text(json.dumps({"test_accuracy": 0.60 + seed / 100, "test_examples": 10000}))


def test_rates_are_chosen_on_mean_validation_accuracy_and_aux_rows_take_their_base_rate(tmp_path):
    cfg = protocol_config(tmp_path)
    write_grid(cfg)
    from nlp_ssl.study.protocol import collect

    records, chosen, matched = collect(cfg, study())
    # scratch: 1e-3 has mean 0.55 on validation, 5e-4 has 0.49, although 5e-4 wins on seed 1.
    assert chosen["scratch"][10]["rate"] == 1e-3 and chosen["scratch"][10]["by_rate"][5e-4] == pytest.approx(0.49)
    assert chosen["rotation"][10]["rate"] == 5e-4
    assert chosen["scratch_aux"][10] == {"rate": 1e-3, "from": "scratch"}
    assert matched is None
    # Selecting on the best checkpoint's validation accuracy reads the other numbers; ties go to the lower rate.
    best = choose_rates(protocol_config(tmp_path, select_on="best"), study(), records)
    assert best["scratch"][10]["by_rate"][1e-3] == pytest.approx(0.60)
    tied = [dict(r, val_accuracy_last=0.5) for r in records]
    assert choose_rates(cfg, study(), tied)["rotation"][10]["rate"] == 5e-4


def test_lr_seeds_search_the_grid_and_the_other_seeds_run_once_at_the_rate_they_chose(tmp_path):
    from nlp_ssl.study.protocol import collect, grid_jobs

    cfg = protocol_config(tmp_path, lr_seeds=[1])
    write_grid(cfg)  # also holds seed 0 at every rate: those runs must not sway the choice
    records, chosen, _ = collect(cfg, study())
    # Seed 1 alone: scratch 0.58 at 5e-4 against 0.50 at 1e-3 (over both seeds 1e-3 wins), rotation 0.7 at 5e-4.
    assert chosen["scratch"][10] == {"rate": 5e-4, "by_rate": {5e-4: 0.58, 1e-3: 0.50}}
    assert chosen["scratch_aux"][10] == {"rate": 5e-4, "from": "scratch"}
    search = {job.name for job in grid_jobs(cfg, study(), 10, None)}
    assert search == {"scratch_k10_s1_lr0.0005", "scratch_k10_s1_lr0.001", "rotation_k10_s1_lr0.0005",
                      "rotation_k10_s1_lr0.001", "pixels_logreg_k10_s0", "pixels_logreg_k10_s1"}
    rest = {job.name for job in grid_jobs(cfg, study(), 10, chosen)}
    assert rest == {"scratch_k10_s0_lr0.0005", "rotation_k10_s0_lr0.0005", "scratch_aux_k10_s0_lr0.0005",
                    "scratch_aux_k10_s1_lr0.0005"}
    report = write_report(cfg, study(), records, chosen, None)
    assert report["summary"]["scratch"]["10"]["seeds"] == [0, 1]
    assert "over seeds [1] (the other seeds run once, at that rate)" in (tmp_path / "results.md").read_text()


def test_report_pairs_seeds_flags_a_loss_still_falling_and_is_rebuilt_from_the_runs_alone(tmp_path):
    cfg = protocol_config(tmp_path, targets=[{"method": "rotation", "over": "scratch", "k": 10, "gain": 5.0},
                                             {"method": "best", "over": "pixels_logreg", "k": 10, "gain": 0.0}])
    write_grid(cfg)
    fake_run(cfg, Job("scratch", 10, 0, 1e-3, 50), last=0.30, best=0.31, val_last=0.3, steps=50)
    fake_run(cfg, Job("scratch", 10, 1, 1e-3, 50), last=0.34, best=0.35, val_last=0.3, steps=50)
    results = run_protocol(cfg, study())
    scratch, rotation = results["summary"]["scratch"]["10"], results["summary"]["rotation"]["10"]
    assert scratch["rate"] == 1e-3 and scratch["headline"]["mean"] == pytest.approx(0.53)
    assert scratch["headline"]["std"] == pytest.approx(0.0424264, rel=1e-5)  # ddof=1 over the two seeds
    assert scratch["best"]["mean"] == pytest.approx(0.54)  # the best checkpoint is reported beside it
    assert rotation["headline"]["mean"] == pytest.approx(0.575)
    gain = results["gains"]["scratch"]["rotation"]["10"]
    assert gain["per_seed"] == {"0": pytest.approx(0.08), "1": pytest.approx(0.01)}
    assert gain["min"] == pytest.approx(0.01) and gain["positive"] == 2
    behind = results["gains"]["pixels_logreg"]["rotation"]["10"]["per_seed"]
    assert behind == {"0": pytest.approx(-0.02), "1": pytest.approx(-0.04)}
    assert results["flattening"]["scratch"]["10"]["flattened"] == 1
    assert results["flattening"]["scratch"]["10"]["not_flattened"] == ["scratch_k10_s1_lr0.001"]
    assert results["speed"]["curves"]["scratch"]["50"]["mean"] == pytest.approx(0.32)
    assert results["speed"]["curves"]["scratch"][str(STEPS)]["mean"] == pytest.approx(0.53)
    table = (tmp_path / "results.md").read_text()
    assert "**Scratch has not flattened at k=10**" in table
    assert "- rotation at k=10 vs scratch: +4.5" in table and "**not met**" in table
    assert "| ViT from scratch | **0.001** (0.0005: 49.0, 0.001: 55.0) |" in table
    assert "| scratch + aux | 0.001 (from scratch) |" in table
    assert "- best fine-tuned method at k=10 (rotation) vs pixels_logreg: -3.0" in table
    for png in ("accuracy_vs_labels.png", "learning_speed.png", "curves/k10.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG", png
    # Nothing ran: report_only reads the folders, and the same folders give the same report.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        [f"{m}_k10_s{s}_lr{r}" for m in ("scratch", "rotation") for s in (0, 1) for r in ("0.001", "0.0005")]
        + [f"scratch_aux_k10_s{s}_lr0.001" for s in (0, 1)] + [f"pixels_logreg_k10_s{s}" for s in (0, 1)]
        + [f"scratch_k10_s{s}_lr0.001_steps50" for s in (0, 1)])
    again = run_protocol(cfg, study())
    assert again == json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))


def test_a_target_is_met_only_on_at_least_five_seeds_each_with_a_gain():
    from nlp_ssl.study.report import targets

    def results(*per_seed):
        cell = {"mean": sum(per_seed) / len(per_seed), "n": len(per_seed), "min": min(per_seed),
                "positive": sum(v > 0 for v in per_seed), "std": 0.0}
        return {"gains": {"scratch": {"rotation": {"10": cell}}, "pixels_logreg": {}},
                "summary": {"rotation": {"10": {"rate": 5e-4}}}}

    rotation = [{"method": "rotation", "over": "scratch", "k": 10, "gain": 5.0}]
    assert "**met**" in targets(results(0.06, 0.07, 0.05, 0.06, 0.08), rotation)[0]
    assert "**not met**" in targets(results(0.06, 0.07, 0.05, 0.06), rotation)[0]  # four seeds
    assert "**not met**" in targets(results(0.09, 0.09, 0.09, 0.09, -0.01), rotation)[0]  # one seed behind
    assert "**not met**" in targets(results(0.04, 0.04, 0.04, 0.04, 0.04), rotation)[0]  # under +5
    best = [{"method": "best", "over": "scratch", "k": 10, "gain": 5.0, "seeds": 4}]
    assert targets(results(0.06, 0.07, 0.05, 0.06), best) == [
        "- best fine-tuned method at k=10 (rotation) vs scratch: " + targets(results(0.06, 0.07, 0.05, 0.06), rotation)[0]
        .split("vs scratch: ")[1].replace("≥ 5 seeds", "≥ 4 seeds").replace("**not met**", "**met**")]


def test_compute_matched_budget_is_scratch_given_the_pretraining_time_as_steps(tmp_path):
    cfg = protocol_config(tmp_path)
    write_grid(cfg)
    from nlp_ssl.study.protocol import collect, speed_jobs

    records, chosen, _ = collect(cfg, study())
    matched = compute_matched_steps(cfg, study(), chosen, records)
    # scratch at its chosen rate: 100 s for 200 steps = 0.5 s a step; 600 s of pretraining = 1200 steps more.
    assert matched["scratch_seconds_per_step"] == pytest.approx(0.5)
    assert (matched["extra_steps"], matched["steps"]) == (1200, 1400)
    jobs = speed_jobs(cfg, chosen, STEPS, matched)
    assert [j.name for j in jobs] == ["scratch_k10_s0_lr0.001_steps50", "scratch_k10_s1_lr0.001_steps50",
                                      "scratch_k10_s0_lr0.001_steps1400", "scratch_k10_s1_lr0.001_steps1400"]
    unknown = ProtocolStudy("x", "finetune_vision", FinetuneVisionConfig, methods())
    assert compute_matched_steps(cfg, unknown, chosen, records)["why_not"] == "no pretraining time known"
    (tmp_path / COMPUTE_MATCHED_FILE).write_text(json.dumps(matched))
    results = run_protocol(cfg, study())
    assert results["speed"]["compute_matched"]["steps"] == 1400 and "accuracy" not in results["speed"]["compute_matched"]


def test_a_baseline_is_fitted_once_and_saved_like_a_run(tmp_path):
    calls = []

    def baseline(ft):
        calls.append((ft.data.k_per_class, ft.seed, ft.train.max_steps))
        return {"test_accuracy": 0.25, "test_examples": 7}

    spec = {**methods(), "pixels_logreg": Method("pixels", baseline=baseline)}
    fake = ProtocolStudy("x", "finetune_vision", FinetuneVisionConfig, spec)
    cfg = protocol_config(tmp_path, report_only=False)
    for _ in range(2):
        assert run_job(cfg, fake, Job("pixels_logreg", 10, 1))["test_accuracy"] == 0.25
    assert calls == [(10, 1, STEPS)]  # the config a fine-tuning run of that k and seed reads
    saved = json.loads((tmp_path / "runs" / "pixels_logreg_k10_s1" / "all_results.json").read_text())
    assert saved["test_examples"] == 7 and saved["baseline"] == "pixels_logreg"


@pytest.mark.parametrize("changes, message", [
    ({"lr_from": {"scratch_aux": "pixels_logreg"}}, "must be a fine-tuned method that searches the grid"),
    ({"lr_from": {"scratch_aux": "mim"}}, "'mim' is not one of"),
    ({"speed_methods": ["pixels_logreg"]}, "speed_methods: 'pixels_logreg' is not a fine-tuned method"),
    ({"methods": ["rotation", "pixels_logreg"], "lr_from": {}, "speed_methods": ["rotation"]},
     "compute-matched run is scratch's, so methods must list scratch"),
    ({"methods": ["rotation", "pixels_logreg"], "lr_from": {}}, "speed_methods: 'scratch' must be in methods too"),
    ({"k_args": {"10": "train.max_steps=5"}}, "k_args.10: 'train.max_steps=5' is not a list of key=value"),
    ({"k_args": {"ten": ["train.max_steps=5"]}}, "k_args: key 'ten' is not a number of labels per class"),
    ({"learning_rates": [-1.0]}, "learning_rates: [-1.0] must list positive rates"),
    ({"k_args": {"10": ["train.max_steps=0"]}}, "max_steps must be > 0, got 0"),
    ({"lr_seeds": [7]}, "lr_seeds: [7] holds none of the seeds of k=10 [0, 1]"),
])
def test_bad_protocol_settings_are_refused_before_anything_runs(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_protocol(protocol_config(tmp_path, **changes), study())


def test_a_checkpoint_kept_without_its_weights_serves_the_report_but_no_new_run(tmp_path):
    """git keeps a study's checkpoint config and results, not its weights: the report and the finished runs
    still work from it, and a run still to come from it is refused with one line before anything runs."""
    from types import SimpleNamespace

    import recipes.study_vision as study_vision

    checkpoint = tmp_path / "pretrain_rotation"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "all_results.json").write_text(json.dumps({"steps": 5, "train_runtime_s": 60.0}))
    out = tmp_path / "study"
    args = [f"output_dir={out}", f"checkpoints.rotation={checkpoint}", "k_per_class=[10]", "seeds=[0]", "k_seeds={}",
            "k_args={}", "methods=[scratch, rotation]", "learning_rates=[1e-3]", "lr_from={}", "speed_methods=[]",
            "compute_matched=null", f"finetune_args=[train.max_steps={STEPS}]", "workers=1"]
    runs = SimpleNamespace(output_dir=str(out))
    fake_run(runs, Job("scratch", 10, 0, 1e-3), last=0.5, best=0.5, val_last=0.5)
    with pytest.raises(ConfigError, match=f"^rotation checkpoint {checkpoint}: no weights \\(model.safetensors\\), and runs "
                                          "from it are still to come"):
        study_vision.main(args)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["scratch_k10_s0_lr0.001"]  # nothing ran
    study_vision.main([*args, "report_only=true"])
    assert "| ViT from scratch | 50.0 (n=1) |" in (out / "results.md").read_text()
    fake_run(runs, Job("rotation", 10, 0, 1e-3), last=0.6, best=0.6, val_last=0.6)
    results = study_vision.main(args)  # every run finished: nothing needs the weights
    assert results["summary"]["rotation"]["10"]["headline"]["mean"] == pytest.approx(0.6)
