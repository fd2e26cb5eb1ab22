"""nlp_ssl.study: the grid, reuse of finished runs, continuation of unfinished ones, and the result format.

The fine-tuning recipe here is a stand-in script in a temporary recipes folder: it answers at once
with a test accuracy that the arguments decide, logs every call, and can fail or be interrupted on
request, so the harness's logic is checked without training anything.
"""

import json
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from nlp_ssl.errors import ConfigError, DataError, RunEnded
from nlp_ssl.study import Method, Study, StudyConfig, recipes_dir, run_study
from nlp_ssl.study import runs as study_runs

FAKE_RECIPE = textwrap.dedent('''
    """Stand-in fine-tuning recipe: test_accuracy = base (0.5, as in its yaml) + k/1000 + seed/100."""
    import json, os, sys, time
    from pathlib import Path

    args = dict(a.split("=", 1) for a in sys.argv[1:])
    out = Path(args["output_dir"])
    calls = Path(args["calls"])
    start = time.time()
    with calls.open("a") as f:
        f.write(json.dumps({"run": out.name, "resume": args.get("resume"), "continued": (out / "checkpoints").is_dir(),
                            "threads": os.environ.get("OMP_NUM_THREADS"), "start": start}) + "\\n")
    time.sleep(float(args.get("pause", 0)))
    if args.get("fail"):
        print("error: data.train_file x.jsonl line 3: field 'text' missing", file=sys.stderr)
        sys.exit(int(args["fail"]))
    if args.get("interrupt") and not (out / "checkpoints").is_dir():
        (out / "checkpoints" / "step_00000002").mkdir(parents=True)
        print("stopped: SIGTERM at step 2", file=sys.stderr)
        sys.exit(75)
    out.mkdir(parents=True, exist_ok=True)
    acc = float(args.get("base", 0.5)) + int(args["data.k_per_class"]) / 1000 + int(args["seed"]) / 100
    history = [{"step": 2, "train_loss": 2.0}, {"step": 2, "eval_loss": 1.5, "eval_accuracy": acc - 0.05},
               {"step": 4, "train_loss": 1.0}, {"step": 4, "eval_loss": 1.7, "eval_accuracy": acc},
               {"step": 4, "eval_loss": 1.7, "eval_accuracy": acc}]
    (out / "trainer_history.json").write_text(json.dumps(history))
    (out / "all_results.json").write_text(json.dumps({
        "test_accuracy": acc, "test_macro_f1": acc - 0.1, "last_test_accuracy": acc - 0.02, "best_step": 4,
        "steps": 4, "test_examples": 50, "lr": float(args.get("optim.learning_rate", 0)), "end": time.time(),
    }))
''')


@dataclass
class FakeData:
    k_per_class: int = 1


@dataclass
class FakeOptim:
    learning_rate: float = 0.0


@dataclass
class FakeTrain:
    max_steps: int = 4


@dataclass
class FakeConfig:
    """What the stand-in recipe's config would be: the baseline receives it."""

    data: FakeData = field(default_factory=FakeData)
    seed: int = 0
    base: float = 0.0
    calls: str = ""
    pause: float = 0.0
    optim: FakeOptim = field(default_factory=FakeOptim)
    train: FakeTrain = field(default_factory=FakeTrain)


@pytest.fixture
def recipes(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    (folder / "configs").mkdir(parents=True)
    (folder / "fake_finetune.py").write_text(FAKE_RECIPE)
    (folder / "configs" / "fake_finetune.yaml").write_text("base: 0.5\n")
    monkeypatch.setattr(study_runs, "recipes_dir", lambda: folder)
    return folder


def make_study(tmp_path, baseline_seen=None):
    calls = f"calls={tmp_path / 'calls.jsonl'}"

    def baseline(cfg: FakeConfig) -> dict:
        if baseline_seen is not None:
            baseline_seen.append(cfg)
        return {"test_accuracy": 0.4 + cfg.seed / 50, "test_macro_f1": 0.3}

    methods = {
        "scratch": Method("from scratch", [calls]),
        "pretrained": Method("pretrained", [calls, "base=0.7"]),
        "linear": Method("a linear baseline", baseline=baseline),
    }
    return Study("Fake study", "fake_finetune", FakeConfig, methods)


def config(tmp_path, **changes):
    values = dict(output_dir=str(tmp_path / "study"), k_per_class=[4, 16], seeds=[0, 1, 2],
                  methods=["scratch", "pretrained", "linear"])
    return StudyConfig(**{**values, **changes})


def calls(tmp_path):
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_every_cell_runs_and_results_hold_runs_mean_std_and_per_seed_gains(tmp_path, recipes):
    results = run_study(config(tmp_path), make_study(tmp_path))
    out = tmp_path / "study"
    assert sorted(c["run"] for c in calls(tmp_path)) == sorted(
        f"{m}_k{k}_s{s}" for m in ("scratch", "pretrained") for k in (4, 16) for s in (0, 1, 2)
    )
    assert all(c["resume"] == "auto" for c in calls(tmp_path))
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert len(results["runs"]) == 18 and results["reference"] == "scratch"

    record = next(r for r in results["runs"] if r["run"] == "pretrained_k16_s2")
    assert record["test_accuracy"] == pytest.approx(0.7 + 0.016 + 0.02)
    # From the history: the repeated last evaluation is dropped, and the loss minimum is at step 2.
    assert (record["last_step"], record["min_val_loss_step"], record["min_val_loss"], record["last_val_loss"]) == (4, 2, 1.5, 1.7)
    assert record["best_val_accuracy"] == record["last_val_accuracy"] == record["test_accuracy"] and record["train_loss_fell"]

    accs = [0.7 + 0.004 + s / 100 for s in (0, 1, 2)]
    cell = results["summary"]["pretrained"]["4"]["test_accuracy"]
    assert cell == {"mean": pytest.approx(np.mean(accs)), "std": pytest.approx(np.std(accs, ddof=1)), "n": 3}
    gain = results["gains"]["pretrained"]["16"]
    assert gain["per_seed"] == {s: pytest.approx(0.2) for s in ("0", "1", "2")}
    assert gain["mean"] == pytest.approx(0.2) and gain["min"] == pytest.approx(0.2)
    assert gain["std"] == pytest.approx(0.0, abs=1e-12)
    # The baseline's gains differ seed by seed: 0.4 + s/50 against 0.5 + 0.004 + s/100.
    linear = results["gains"]["linear"]["4"]["per_seed"]
    assert linear == {str(s): pytest.approx(0.4 + s / 50 - (0.504 + s / 100)) for s in (0, 1, 2)}
    assert "scratch" not in results["gains"]

    table = (out / "results.md").read_text()
    assert "| pretrained | 71.4 ± 1.0 (n=3) | 72.6 ± 1.0 (n=3) |" in table
    assert "+-9.4" not in table  # signs are written once
    assert ("| a linear baseline | -9.4 ± 1.0 (min -10.4; 0/3 seeds > 0) | -10.6 ± 1.0 (min -11.6; 0/3 seeds > 0) |"
            in table)
    assert "- pretrained, k=16: s0 +20.0, s1 +20.0, s2 +20.0" in table  # the per-seed differences behind the gains
    assert "| pretrained_k16_s2 | 4 | 4 | 73.6 / 73.6 | 73.6 / 71.6 | 1.500 (2) → 1.700 | yes |" in table
    for png in ("accuracy_vs_labels.png", "curves/k4.png", "curves/k16.png", "curves/scratch_k4_s0.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not (out / "curves" / "linear_k4_s0.png").exists()


def test_finished_runs_are_reused_not_rerun(tmp_path, recipes):
    first = run_study(config(tmp_path, k_per_class=[4], seeds=[0]), make_study(tmp_path))
    assert len(calls(tmp_path)) == 2
    (tmp_path / "study" / "runs" / "scratch_k4_s0" / "all_results.json").write_text(json.dumps(
        {"test_accuracy": 0.123, "test_macro_f1": 0.1, "best_step": 4}
    ))
    again = run_study(config(tmp_path, k_per_class=[4], seeds=[0]), make_study(tmp_path))
    assert len(calls(tmp_path)) == 2  # nothing ran
    assert next(r for r in again["runs"] if r["method"] == "scratch")["test_accuracy"] == 0.123
    assert [r["run"] for r in again["runs"]] == [r["run"] for r in first["runs"]]


def test_an_interrupted_run_stops_the_study_with_its_exit_code_and_continues_on_rerun(tmp_path, recipes):
    cfg = config(tmp_path, k_per_class=[4], seeds=[0], methods=["scratch"], method_overrides={"scratch": ["interrupt=1"]})
    with pytest.raises(RunEnded, match="scratch_k4_s0 failed \\(exit 75\\): stopped: SIGTERM at step 2") as ended:
        run_study(cfg, make_study(tmp_path))
    assert ended.value.exit_code == 75
    results = run_study(cfg, make_study(tmp_path))
    assert [(c["run"], c["resume"], c["continued"]) for c in calls(tmp_path)] == [
        ("scratch_k4_s0", "auto", False), ("scratch_k4_s0", "auto", True),
    ]
    assert results["runs"][0]["test_accuracy"] == pytest.approx(0.504)
    log = (tmp_path / "study" / "runs" / "scratch_k4_s0.log").read_text()
    assert log.count("$ ") == 2 and "SIGTERM" in log  # both attempts are in the log


def test_reuse_false_reruns_from_an_empty_folder(tmp_path, recipes):
    cfg = config(tmp_path, k_per_class=[4], seeds=[0], methods=["scratch"])
    run_study(cfg, make_study(tmp_path))
    marker = tmp_path / "study" / "runs" / "scratch_k4_s0" / "checkpoints"
    marker.mkdir()
    run_study(config(tmp_path, k_per_class=[4], seeds=[0], methods=["scratch"], reuse=False), make_study(tmp_path))
    assert [c["continued"] for c in calls(tmp_path)] == [False, False]
    assert not marker.exists()


def test_a_run_with_bad_input_raises_config_error_with_its_line(tmp_path, recipes):
    cfg = config(tmp_path, k_per_class=[4], seeds=[0], methods=["pretrained"], method_overrides={"pretrained": ["fail=2"]})
    with pytest.raises(ConfigError, match="pretrained_k4_s0 failed \\(exit 2\\): error: data.train_file x.jsonl line 3"):
        run_study(cfg, make_study(tmp_path))


def test_arguments_reach_runs_and_baselines_in_order(tmp_path, recipes):
    seen = []
    cfg = config(tmp_path, k_per_class=[8], seeds=[3], finetune_args=["optim.learning_rate=0.1", "base=0.2"],
                 method_overrides={"pretrained": ["optim.learning_rate=0.3"], "linear": ["optim.learning_rate=0.4"]})
    results = run_study(cfg, make_study(tmp_path, seen))
    runs = tmp_path / "study" / "runs"
    lr = {m: json.loads((runs / f"{m}_k8_s3" / "all_results.json").read_text())["lr"] for m in ("scratch", "pretrained")}
    assert lr == {"scratch": 0.1, "pretrained": 0.3}
    # finetune_args, then the method's own arguments (pretrained's base=0.7 wins over 0.2), then its overrides.
    assert next(r for r in results["runs"] if r["method"] == "pretrained")["test_accuracy"] == pytest.approx(0.7 + 0.008 + 0.03)
    # The baseline gets the config a run of the same k and seed reads: recipe yaml, then the same arguments.
    assert len(seen) == 1
    assert (seen[0].data.k_per_class, seen[0].seed, seen[0].optim.learning_rate, seen[0].base) == (8, 3, 0.4, 0.2)


def test_baselines_are_saved_as_runs_and_fine_tuning_runs_go_workers_at_a_time(tmp_path, recipes, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []
    cfg = config(tmp_path, k_per_class=[4], seeds=[0, 1], workers=2, finetune_args=["pause=1"])
    first = run_study(cfg, make_study(tmp_path, seen))
    saved = json.loads((tmp_path / "study" / "runs" / "linear_k4_s1" / "all_results.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(0.42) and saved["baseline"] == "linear"
    # Two runs at a time, each with its share of the cores.
    started = sorted(c["start"] for c in calls(tmp_path))
    ended = sorted(json.loads(p.read_text())["end"] for p in (tmp_path / "study" / "runs").glob("*/all_results.json")
                   if "end" in p.read_text())
    assert len(started) == 4 and started[1] < ended[0]  # the second run started before the first ended
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert {c["threads"] for c in calls(tmp_path)} == {str(max(1, cores // 2))}
    assert "OMP_NUM_THREADS" not in os.environ  # the share ends with the study
    # A rerun reads every cell, the baselines' too: nothing runs or fits again.
    again = run_study(cfg, make_study(tmp_path, seen))
    assert len(calls(tmp_path)) == 4 and len(seen) == 2
    assert again["runs"] == first["runs"]


def test_report_only_rebuilds_the_report_from_the_runs_and_runs_nothing(tmp_path, recipes):
    seen = []
    cfg = config(tmp_path, k_per_class=[4], seeds=[0, 1])
    results = run_study(cfg, make_study(tmp_path, seen))
    out = tmp_path / "study"
    table = (out / "results.md").read_text()
    (out / "results.json").unlink()
    (out / "results.md").unlink()
    rebuilt = run_study(config(tmp_path, k_per_class=[4], seeds=[0, 1], report_only=True), make_study(tmp_path, seen))
    assert rebuilt == results and (out / "results.md").read_text() == table
    assert len(calls(tmp_path)) == 4 and len(seen) == 2
    assert rebuilt["config"]["report_only"] is False  # the study it describes, as it runs
    # A cell that has not run is left out, not run.
    (out / "runs" / "pretrained_k4_s1" / "all_results.json").unlink()
    partial = run_study(config(tmp_path, k_per_class=[4], seeds=[0, 1], report_only=True), make_study(tmp_path, seen))
    assert "pretrained_k4_s1" not in {r["run"] for r in partial["runs"]} and len(calls(tmp_path)) == 4
    assert partial["summary"]["pretrained"]["4"]["test_accuracy"]["n"] == 1


def test_runs_from_reads_another_studys_finished_runs_of_the_methods_it_names(tmp_path, recipes):
    main = run_study(config(tmp_path, k_per_class=[4], seeds=[0, 1]), make_study(tmp_path))
    assert len(calls(tmp_path)) == 4
    check = config(tmp_path, output_dir=str(tmp_path / "check"), k_per_class=[4, 16], seeds=[0, 1],
                   method_overrides={"pretrained": ["base=0.9"]}, runs_from={"scratch": str(tmp_path / "study")})
    results = run_study(check, make_study(tmp_path))
    ran = sorted(c["run"] for c in calls(tmp_path)[4:])
    # scratch at k=4 is read from the main study; at k=16 it has no run there, so it runs here.
    assert ran == ["pretrained_k16_s0", "pretrained_k16_s1", "pretrained_k4_s0", "pretrained_k4_s1",
                   "scratch_k16_s0", "scratch_k16_s1"]
    assert not (tmp_path / "check" / "runs" / "scratch_k4_s0").exists()
    by_run = {r["run"]: r for r in results["runs"]}
    assert by_run["scratch_k4_s1"] == next(r for r in main["runs"] if r["run"] == "scratch_k4_s1")
    assert results["gains"]["pretrained"]["4"]["per_seed"] == {"0": pytest.approx(0.4), "1": pytest.approx(0.4)}
    for png in ("curves/scratch_k4_s0.png", "curves/k4.png"):  # the curves read the other study's history
        assert (tmp_path / "check" / png).is_file(), png
    with pytest.raises(ConfigError, match="^runs_from.scratch: .* is not a study folder$"):
        config(tmp_path, runs_from={"scratch": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="^runs_from: 'simclr' is not one of"):
        run_study(config(tmp_path, runs_from={"simclr": str(tmp_path / "study")}), make_study(tmp_path))


def test_a_one_seed_cell_prints_the_same_in_a_text_and_a_vision_report(tmp_path, recipes):
    """The plain plan (the text study's) and the rate-grid protocol (the vision study's) print their cells
    with one function: a single seed shows its count, not a spread of 0."""
    from nlp_ssl.study.protocol import ProtocolConfig, ProtocolStudy, run_protocol

    run_study(config(tmp_path, k_per_class=[4], seeds=[0], methods=["scratch", "pretrained"]), make_study(tmp_path))
    text = (tmp_path / "study" / "results.md").read_text()
    spec = make_study(tmp_path)
    vision = ProtocolStudy(spec.title, spec.recipe, spec.config_class, spec.methods)
    cfg = ProtocolConfig(output_dir=str(tmp_path / "protocol"), k_per_class=[4], seeds=[0], methods=["scratch", "pretrained"],
                         learning_rates=[1e-3], speed_methods=[])
    run_protocol(cfg, vision)
    protocol = (tmp_path / "protocol" / "results.md").read_text()
    best = protocol.split("## Test accuracy, best-on-validation checkpoint")[1].split("\n## ")[0]
    # pretrained, k=4, seed 0: 0.7 + 0.004 on its best checkpoint in both studies.
    assert "| pretrained | 70.4 (n=1) |" in text.split("## Test accuracy")[1]
    assert "| pretrained | 70.4 (n=1) |" in best
    assert "± 0.0" not in text and "± 0.0" not in protocol
    gain = "| pretrained | +20.0 (min +20.0; 1/1 seeds > 0) |"
    assert gain in text and gain in protocol


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"methods": ["scratch", "simclr"]}, "methods: 'simclr' is not one of ['scratch', 'pretrained', 'linear']"),
        ({"method_overrides": {"mim": ["optim.learning_rate=1"]}}, "methods: 'mim' is not one of"),
        ({"methods": []}, "methods: list at least one of"),
    ],
)
def test_unknown_methods_are_refused_before_anything_runs(tmp_path, recipes, changes, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", "\\[").replace("]", "\\]")):
        run_study(config(tmp_path, **changes), make_study(tmp_path))
    assert calls(tmp_path) == [] and not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"k_per_class": [4, 0]}, "k_per_class: 0 is not a positive number of labels per class"),
        ({"seeds": []}, "k_per_class and seeds must each list at least one value"),
        ({"finetune_args": ["max_steps"]}, "finetune_args: ['max_steps'] is not a list of key=value"),
        ({"method_overrides": {"scratch": "lr=1"}}, "method_overrides.scratch: 'lr=1' is not a list of key=value"),
    ],
)
def test_bad_study_config_is_refused_while_read(tmp_path, changes, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", "\\[").replace("]", "\\]") + "$"):
        config(tmp_path, **changes)


def test_recipes_dir_is_the_installed_recipes_package():
    import nlp_ssl.recipes

    folder = recipes_dir()
    assert folder.resolve() == Path(nlp_ssl.recipes.__file__).resolve().parent
    for recipe in ("finetune_text", "finetune_vision", "pretrain_vit", "study_text", "study_vision"):
        assert (folder / f"{recipe}.py").is_file() and (folder / "configs" / f"{recipe}.yaml").is_file()


# ------------------------------------------------ study_text's checkpoint rows, end to end (real recipes)

TOPICS = ("People", "Geography", "Mathematics")


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    """3 classes of real wiki articles (12 per class to train from, 5 to test on), and an unlabelled file."""
    from nlp_ssl.data.wiki import load_wiki_corpus
    from tests.helpers import write_jsonl

    corpus = load_wiki_corpus()
    folder = tmp_path_factory.mktemp("task")
    files = {}
    for split, n in (("en_train", 12), ("en_test", 5)):
        topics = corpus[split]["topic"][:]
        rows = corpus[split].select([i for c in TOPICS for i in [j for j, t in enumerate(topics) if t == c][:n]])
        files[split] = write_jsonl(folder / f"{split}.jsonl", [{"body": r["text"], "topic": r["topic"]} for r in rows])
    unlabeled = corpus["en_train"].select(range(2000, 2040))["text"][:]
    files["unlabeled"] = write_jsonl(folder / "unlabeled.jsonl", [{"body": t} for t in unlabeled])
    a_test_text = json.loads(files["en_test"].read_text().splitlines()[7])["body"]
    files["leaky"] = write_jsonl(folder / "leaky.jsonl", [{"body": t} for t in [*unlabeled[:5], a_test_text]])
    return files


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    """A tiny BERT encoder saved without an MLM head (as all-MiniLM-L6-v2 is), with its WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tests.helpers import ROOT

    tok = AutoTokenizer.from_pretrained(ROOT / "tests" / "data" / "tokenizers" / "wordpiece")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("checkpoint") / "encoder"
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def study_text_args(files, checkpoint, out, unlabeled, methods="checkpoint,checkpoint_continued,tfidf"):
    finetune = [f"data.train_file={files['en_train']}", f"data.test_file={files['en_test']}", "data.text_column=body",
                "data.label_column=topic", "train.max_steps=4", "eval.every=2", "impl.micro_batch_size=8",
                "train.global_batch_size=8",
                "data.validation_per_class=2", "data.max_length=48"]
    cont = ["train.max_steps=2", "eval.every=2", "save.every=2", "data.block_size=32", "impl.micro_batch_size=8",
            "train.global_batch_size=8",
            "data.validation_split=0.2"]
    return [f"checkpoint={checkpoint}", f"output_dir={out}", "k_per_class=[4]", "seeds=[0]", f"methods=[{methods}]",
            f"unlabeled_files=[{unlabeled}]", "finetune_args=[" + ",".join(finetune) + "]",
            "continue_args=[" + ",".join(cont) + "]", "pretrained=auto",
            "pretrain_args=[" + ",".join([*cont, "tokenizer.vocab_size=400"]) + "]"]


@pytest.mark.slow
def test_study_text_checkpoint_rows_continue_pretraining_on_the_task_texts_then_fine_tune(tmp_path, task_files,
                                                                                            encoder_checkpoint):
    from safetensors.torch import load_file

    from tests.helpers import run_recipe

    out = tmp_path / "study"
    methods = "checkpoint,checkpoint_continued,pretrained,tfidf"
    proc = run_recipe("study_text.py", *study_text_args(task_files, encoder_checkpoint, out, task_files["unlabeled"], methods),
                      env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert {r["run"] for r in results["runs"]} == {f"{m}_k4_s0" for m in methods.split(",")}
    # pretrained=auto, then the continued checkpoint: 2 MLM steps each on the pool's texts + the unlabelled file,
    # never the test file.
    scratch, record = results["pretraining"]
    continued = out / "pretrain" / "continued"
    assert scratch["folder"] == str(out / "pretrain" / "scratch") and "model.name_or_path" not in scratch["command"]
    assert record["steps"] == scratch["steps"] == 2 and record["folder"] == str(continued)
    for command in (scratch["command"], record["command"]):
        assert f"data.train_file={task_files['en_train']}" in command
        assert f"data.extra_train_files=[{task_files['unlabeled']}]" in command
        assert str(task_files["en_test"]) not in command
    assert tokenizer_size(out / "pretrain" / "scratch") <= 400  # a tokenizer trained on the task's texts
    log = (out / "pretrain" / "continued.log").read_text()
    assert "no complete masked_lm head in the checkpoint" in log
    before, after = load_file(str(encoder_checkpoint / "model.safetensors")), load_file(str(continued / "model.safetensors"))
    layer = "encoder.layer.0.attention.self.query.weight"
    assert before[layer].shape == after[f"bert.{layer}"].shape and not torch_equal(before[layer], after[f"bert.{layer}"])
    # Each checkpoint row fine-tuned its own starting point.
    for run, start in (("checkpoint_k4_s0", encoder_checkpoint), ("checkpoint_continued_k4_s0", continued)):
        command = (out / "runs" / f"{run}.log").read_text().splitlines()[0]
        assert f"model.name_or_path={start} " in command and "optim.learning_rate=1.0e-4" in command
        assert json.loads((out / "runs" / run / "all_results.json").read_text())["steps"] == 4
    table = (out / "results.md").read_text()
    assert f"| checkpoint ({encoder_checkpoint}) + continued pretraining, fine-tuned |" in table
    assert "continued pretraining of the checkpoint: `recipes/pretrain_mlm.py --config pretrain_mlm_continue" in table


def tokenizer_size(folder) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder))


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


@pytest.mark.slow
def test_study_text_refuses_unlabelled_text_that_holds_a_test_text(tmp_path, task_files, encoder_checkpoint):
    from tests.helpers import run_recipe

    out = tmp_path / "study"
    proc = run_recipe("study_text.py", *study_text_args(task_files, encoder_checkpoint, out, task_files["leaky"]),
                      env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"error: unlabeled_files {task_files['leaky']}: 1 of its 6 texts are test texts of the task (the first "
                    "is text 6); remove them so that pretraining never sees the test set")
    assert not (out / "pretrain").exists() and not (out / "runs").exists()


# ------------------------------------------------------------------- the pretraining corpus of a study


def test_the_pretraining_corpus_is_the_pool_plus_unlabelled_files_never_the_test_file(tmp_path):
    from nlp_ssl.study.pretraining import check_test_unseen, corpus_args
    from nlp_ssl.text.text_finetuning import ClassificationDataConfig

    pool, test = tmp_path / "pool.jsonl", tmp_path / "test.jsonl"
    data = ClassificationDataConfig(train_file=str(pool), test_file=str(test), text_column="body")
    assert corpus_args(data, []) == [f"data.train_file={pool}", "data.text_column=body"]
    assert corpus_args(data, ["a.txt", "b.jsonl"])[-1] == "data.extra_train_files=[a.txt,b.jsonl]"
    assert corpus_args(ClassificationDataConfig(), []) == ["data.source=builtin:wiki"]  # the built-in task's pool
    with pytest.raises(ConfigError, match="unlabeled_files: 'x,y.txt': a path with ','"):
        corpus_args(data, ["x,y.txt"])

    lines = tmp_path / "more.txt"
    lines.write_text("an unlabelled line\nthe second test text\n")
    check_test_unseen(["the first test text"], [str(lines)], "body")
    with pytest.raises(DataError, match=f"^unlabeled_files {lines}: 1 of its 2 texts are test texts of the task "
                                         r"\(the first is text 2\)"):
        check_test_unseen(["the first test text", "the second test text"], [str(lines)], "body")



# ------------------------------------------------------------------- what made a results file


def test_result_files_record_the_command_and_the_commit_that_made_them(tmp_path, recipes):
    import subprocess

    from nlp_ssl.study import provenance

    study = make_study(tmp_path)
    study.command = provenance.command_line(str(recipes / "fake_study.py"), ["k_per_class=[4]", "methods=[scratch, linear]"])
    results = run_study(config(tmp_path, k_per_class=[4], seeds=[0], methods=["scratch", "linear"]), study)
    git = ["git", "-C", str(provenance.CHECKOUT), "rev-parse", "HEAD"]
    head = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    saved = json.loads((tmp_path / "study" / "results.json").read_text())["provenance"]
    assert saved == results["provenance"] and saved["commit"] == head and isinstance(saved["dirty"], bool)
    assert saved["command"] == f"python {recipes / 'fake_study.py'} 'k_per_class=[4]' 'methods=[scratch, linear]'"
    dirty = " with uncommitted changes to the code" if saved["dirty"] else ""
    line = f"- written by `{saved['command']}` at commit {head[:12]}{dirty}"
    assert line in (tmp_path / "study" / "results.md").read_text().splitlines()


def test_the_commit_is_the_code_checkouts_and_dirty_means_its_code_changed(tmp_path, monkeypatch):
    import subprocess

    from nlp_ssl.study import provenance

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    for path in ("nlp_ssl/study/x.py", "recipes/study_x.py", "results/x/results.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("0\n")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "CHECKOUT", tmp_path.resolve())
    assert provenance.code_state() == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "results" / "x" / "results.md").write_text("rewritten by the study\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert provenance.code_state()["dirty"] is False  # a study rewriting its results is not a code change
    (tmp_path / "recipes" / "study_x.py").write_text("1\n")
    assert provenance.code_state()["dirty"] is True
    # A package installed into some other repository's folder has no commit of its own.
    monkeypatch.setattr(provenance, "CHECKOUT", (tmp_path / "nlp_ssl").resolve())
    assert provenance.code_state() == {"commit": None, "dirty": None}
    assert provenance.line({"command": "python x.py", "commit": None, "dirty": None}) == (
        "- written by `python x.py`, code not in a git checkout")
    monkeypatch.chdir(tmp_path)
    assert provenance.command_line(str(tmp_path / "recipes" / "study_x.py"), ["seeds=[0, 1]", "reuse=false"]) == (
        "python recipes/study_x.py 'seeds=[0, 1]' reuse=false")
