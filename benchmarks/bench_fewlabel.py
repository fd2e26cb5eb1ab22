"""Few labels, text: the setfit package against nlp_ssl's standard and contrastive fine-tuning, on the same body.

Every method starts from the pip MiniLM (all-MiniLM-L6-v2, ``builtin:minilm``), or from it after
continued pretraining on the task's own unlabelled texts (``+mlm``: masked LM,
``recipes/configs/pretrain_mlm_continue.yaml``; ``+simcse``: ``recipes/configs/pretrain_mlm_simcse.yaml``;
one run per task, shared by its cells, never reading the test file), and trains on the same k labelled
examples per class (nlp_ssl's ``few_label_split``: the same seed draws the same rows for every method):

- ``setfit``: the setfit package with its defaults (contrastive pairs with the cosine loss, then a
  logistic-regression head on frozen mean-pooled embeddings); it uses no validation rows;
- ``standard``: ``recipes/finetune_text.py``, cross-entropy, best checkpoint by validation accuracy
  (``data.validation_per_class`` rows, drawn apart from the k);
- ``contrastive``: the same with ``finetune.mode=contrastive``.

Tasks: ``kjv`` (verse -> one of 8 parts of the Bible, ``data_scripts/prepare_kjv_genre.py``),
``wiki_topic`` (the built-in wiki topic task, 11 classes) and ``wikipairs`` (do two first sentences
share a topic?, ``data_scripts/prepare_wiki_pairs.py``; setfit reads a pair as ``a [SEP] b``). Test
accuracy and macro-F1, and the CPU seconds of each run (its process tree's user + system time, from
``wait4``), with ``--threads`` threads per run.

    python benchmarks/bench_fewlabel.py                                   # everything (many CPU-hours)
    python benchmarks/bench_fewlabel.py --tasks kjv --k 8 --seeds 0 --methods setfit,standard,contrastive
    python benchmarks/bench_fewlabel.py --report_only                     # the table from finished cells

Each cell (task, k, seed, method) is a folder under ``--out``/runs with its ``cell.json`` when finished
(its trained weights are then deleted unless ``--keep_models``); a rerun reuses finished cells made with
the same settings and the pretraining runs, and redoes the rest. ``results.md`` and
``results.json`` hold every finished cell, the commit and the command.

setfit is an optional dependency of this benchmark only: ``pip install setfit==1.2.0`` (it installs
beside transformers 5 and torch 2.13 without replacing them; check with ``pip install --dry-run``). Where it
cannot share the environment, give it its own and pass its interpreter, never letting pip pull a CUDA torch:

    python -m venv .venv-setfit && .venv-setfit/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    .venv-setfit/bin/pip install setfit==1.2.0
    python benchmarks/bench_fewlabel.py --setfit_python .venv-setfit/bin/python

The setfit runs are subprocesses of this file (``setfit-run``) that read the split from jsonl files and
write their predictions, so they need neither nlp_ssl nor its environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = "builtin:minilm"
FINETUNINGS = ("setfit", "standard", "contrastive")
PRETRAININGS = ("mlm", "simcse")
METHODS = tuple(f + s for f in FINETUNINGS for s in ("", *(f"+{p}" for p in PRETRAININGS)))
#: nlp_ssl fine-tuning: the settings of the continued-pretraining study for MiniLM (results/continued_pretraining),
#: with ``max_steps`` (200) from ``--max_steps``.
NLP_SSL_ARGS = ["optim.learning_rate=1e-4", "eval.every=20", "train.global_batch_size=16", "log.progress_bar=false"]
#: Continued pretraining of MiniLM on the task's texts: config and arguments (the MLM ones are kjv.sh's).
PRETRAIN = {
    "mlm": ("pretrain_mlm_continue", ["train.max_steps=300", "data.block_size=64", "eval.every=100", "save.every=100",
                                      "optim.learning_rate=3e-5"]),
    "simcse": ("pretrain_mlm_simcse", []),
}


@dataclass
class Task:
    name: str
    #: finetune_text's data arguments (``{data}``: the benchmark's data folder).
    data_args: list[str]
    max_length: int
    #: Folder (under the data folder) and script that write its files; None: built in.
    prepare: str | None = None
    #: Pretraining corpus arguments (``{data}`` as above).
    corpus_args: list[str] = field(default_factory=list)


TASKS = {
    "kjv": Task("kjv", ["data.train_file={data}/kjv/pool.jsonl", "data.test_file={data}/kjv/test.jsonl"], 64,
                "prepare_kjv_genre.py", ["data.train_file={data}/kjv/pool.jsonl", "data.text_column=text"]),
    "wiki_topic": Task("wiki_topic", [], 64, None, ["data.source=builtin:wiki"]),
    "wikipairs": Task("wikipairs", ["data.train_file={data}/wikipairs/train.jsonl", "data.test_file={data}/wikipairs/test.jsonl",
                                    "data.text_pair_column=text_pair"], 128, "prepare_wiki_pairs.py",
                      ["data.train_file={data}/wikipairs/sentences.jsonl", "data.text_column=text"]),
}


# ------------------------------------------------------------------------------ processes and CPU time


def run_measured(cmd: list[str], log: Path, threads: int, cwd: Path = ROOT) -> dict:
    """Run ``cmd`` with ``threads`` threads, output to ``log``; its exit code, CPU and wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's tree only, even with other runs going on
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": time.perf_counter() - start}


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def git_commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "nlp_ssl", "recipes", "benchmarks")
    return commit + (" (with uncommitted changes in nlp_ssl/, recipes/ or benchmarks/)" if dirty else "")


# -------------------------------------------------------------------------------------------- data


def prepare_data(tasks: list[str], data: Path) -> None:
    for name in tasks:
        task = TASKS[name]
        if task.prepare is None:
            continue
        folder = data / name
        if not (folder / "test.jsonl").is_file():
            cmd = [sys.executable, str(ROOT / "data_scripts" / task.prepare), "--out", str(folder)]
            subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if name == "wikipairs" and not (folder / "sentences.jsonl").is_file():
            write_pair_sentences(folder / "train.jsonl", folder / "sentences.jsonl")


def write_pair_sentences(pairs: Path, out: Path) -> None:
    """The unlabelled texts of a pair task: each distinct sentence of its training pairs, once."""
    from nlp_ssl import atomic

    seen: dict[str, None] = {}
    for line in pairs.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        seen.setdefault(row["text"])
        seen.setdefault(row["text_pair"])
    atomic.write_text(out, "".join(json.dumps({"text": t}) + "\n" for t in seen))


def task_args(task: Task, data: Path) -> list[str]:
    return [a.format(data=data) for a in task.data_args] + [f"data.max_length={task.max_length}"]


def write_split(task: Task, data: Path, k: int, seed: int, folder: Path) -> dict:
    """The rows a fine-tuning run of this k and seed trains on, and the test rows, as jsonl for setfit."""
    from nlp_ssl import atomic
    from nlp_ssl.config import parse_config
    from nlp_ssl.text.text_finetuning import FinetuneTextConfig, load_splits, split_pool

    cfg = parse_config(FinetuneTextConfig, [*task_args(task, data), f"data.k_per_class={k}", f"seed={seed}"],
                       default_yaml=ROOT / "recipes" / "configs" / "finetune_text.yaml")
    splits, names, where = load_splits(cfg.data)
    train, _ = split_pool(splits["pool"], names, cfg.data, cfg.seed, where)
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in (("train", train), ("test", splits["test"])):
        atomic.write_text(folder / f"{split}.jsonl", "".join(json.dumps(row) + "\n" for row in ds))
    return {"train_examples": len(train), "classes": names}


# ------------------------------------------------------------------------------ continued pretraining


def pretrained_body(task: Task, kind: str, data: Path, out: Path, threads: int) -> dict:
    """MiniLM after continued pretraining (``kind``) on the task's texts: run once, reused."""
    folder = out / "pretrain" / f"{task.name}_{kind}"
    record_file = folder / "pretrain.json"
    if record_file.is_file():
        return json.loads(record_file.read_text())
    config, extra = PRETRAIN[kind]
    cmd = [sys.executable, "-m", "nlp_ssl", "run", "pretrain_mlm", "--config", config, f"model.name_or_path={BODY}",
           *[a.format(data=data) for a in task.corpus_args], *extra, f"output_dir={folder}", "resume=auto",
           "log.report_to=[]", "log.progress_bar=false"]
    print(f"[pretrain] {task.name} {kind}: {' '.join(cmd[2:])}", flush=True)
    log = out / "pretrain" / f"{task.name}_{kind}.log"
    measured = run_measured(cmd, log, threads)
    if measured["returncode"] != 0:
        raise SystemExit(f"continued pretraining {task.name} {kind} failed:\n{tail(log)}")
    results = json.loads((folder / "all_results.json").read_text())
    record = {"body": str(folder), "command": " ".join(cmd[1:]), **measured,
              "steps": results.get("steps"), "eval_loss": results.get("eval_loss")}
    record_file.write_text(json.dumps(record, indent=1))
    return record


# ------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Settings:
    """What every cell runs with; a finished cell made with other settings is run again."""

    threads: int = 1
    max_steps: int = 200
    #: setfit's ``max_steps`` (-1: its default, one epoch of its pairs).
    setfit_max_steps: int = -1
    #: More ``recipes/finetune_text.py`` arguments for the nlp_ssl runs (e.g. ``finetune.contrastive.loss=cosine``).
    finetune_args: tuple[str, ...] = ()

    def nlp_ssl_args(self) -> list[str]:
        return [*NLP_SSL_ARGS, f"train.max_steps={self.max_steps}", *self.finetune_args]


def cell_dir(out: Path, task: str, k: int, seed: int, method: str) -> Path:
    return out / "runs" / task / f"k{k}_s{seed}" / method


def finished_cell(folder: Path, settings: Settings) -> dict | None:
    path = folder / "cell.json"
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    return cell if cell.get("settings") == json.loads(json.dumps(dataclasses.asdict(settings))) else None


def prune(folder: Path) -> None:
    """A finished cell without its weights (about 200 MB a cell): its record, logs and curves stay."""
    for heavy in ("setfit/checkpoints", "run/best_model", "run/checkpoints"):
        shutil.rmtree(folder / heavy, ignore_errors=True)
    (folder / "run" / "model.safetensors").unlink(missing_ok=True)


def run_cell(task: Task, k: int, seed: int, method: str, body: str, data: Path, out: Path, settings: Settings,
             setfit_python: str, provenance: dict, keep_models: bool = False) -> dict:
    folder = cell_dir(out, task.name, k, seed, method)
    finished = finished_cell(folder, settings)
    if finished is not None:
        return {**finished, "reused": True}
    finetuning = method.split("+")[0]
    log = folder / "run.log"
    threads = settings.threads
    if finetuning == "setfit":
        split = write_split(task, data, k, seed, folder / "split")
        cmd = [setfit_python, str(Path(__file__).resolve()), "setfit-run", "--split", str(folder / "split"),
               "--body", body, "--seed", str(seed), "--max_length", str(task.max_length), "--out", str(folder / "setfit"),
               "--max_steps", str(settings.setfit_max_steps)]
        measured = run_measured(cmd, log, threads)
        if measured["returncode"] != 0:
            raise RuntimeError(f"{folder}: setfit failed\n{tail(log)}")
        scores = score_predictions(folder / "split" / "test.jsonl", folder / "setfit" / "predictions.json")
        record = {**scores, "train_examples": split["train_examples"]}
    else:
        mode = ["finetune.mode=contrastive"] if finetuning == "contrastive" else []
        cmd = [sys.executable, str(ROOT / "recipes" / "finetune_text.py"), *task_args(task, data), f"data.k_per_class={k}",
               f"seed={seed}", f"model.name_or_path={body}", *settings.nlp_ssl_args(), *mode,
               f"output_dir={folder / 'run'}", "resume=auto"]
        measured = run_measured(cmd, log, threads)
        if measured["returncode"] != 0:
            raise RuntimeError(f"{folder}: fine-tuning failed\n{tail(log)}")
        results = json.loads((folder / "run" / "all_results.json").read_text())
        record = {"accuracy": results["test_accuracy"], "macro_f1": results["test_macro_f1"],
                  "last_accuracy": results.get("last_test_accuracy"), "last_macro_f1": results.get("last_test_macro_f1"),
                  "best_step": results.get("best_step"), "train_examples": results["train_examples"]}
    record = {"task": task.name, "k": k, "seed": seed, "method": method, "body": body, **record,
              "cpu_s": measured["cpu_s"], "wall_s": measured["wall_s"], "settings": dataclasses.asdict(settings),
              **provenance, "command": " ".join(cmd[1:])}
    (folder / "cell.json").write_text(json.dumps(record, indent=1))
    if not keep_models:
        prune(folder)
    return record


def score_predictions(test_file: Path, predictions_file: Path) -> dict:
    from nlp_ssl.metrics import compute_scores

    labels = [json.loads(line)["label"] for line in test_file.read_text(encoding="utf-8").splitlines()]
    predictions = json.loads(predictions_file.read_text())
    return compute_scores(["accuracy", "macro_f1"], predictions, labels)


# ------------------------------------------------------------------------------------------ report


def mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values) * scale
    return f"{mean:.1f} ± {statistics.stdev(values) * scale:.1f}" if len(values) > 1 else f"{mean:.1f}"


def report(cells: list[dict], pretraining: dict, out: Path, command: str, settings: Settings) -> str:
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    ks = sorted({c["k"] for c in cells})
    methods = [m for m in METHODS if any(c["method"] == m for c in cells)]
    seeds = sorted({c["seed"] for c in cells})
    lines = ["# Few labels, text: setfit vs nlp_ssl fine-tuning on the pip MiniLM", "",
             f"Test accuracy and macro-F1 in percent, mean ± std over the seeds run (of {seeds}); CPU seconds per "
             "run (user + system of the run's processes), its mean over the cells. nlp_ssl runs keep their best "
             "checkpoint by validation accuracy (16 validation rows per class, drawn apart from the k); setfit uses "
             "no validation rows.", ""]
    for task in tasks:
        lines += [f"## {task}", "", "| method | " + " | ".join(f"k={k} acc | k={k} macro-F1 | k={k} CPU s" for k in ks) + " |",
                  "| --- |" + " --- | --- | --- |" * len(ks)]
        for method in methods:
            row = [method]
            for k in ks:
                got = [c for c in cells if c["task"] == task and c["k"] == k and c["method"] == method]
                row += [mean_std([c["accuracy"] for c in got]), mean_std([c["macro_f1"] for c in got]),
                        f"{statistics.fmean(c['cpu_s'] for c in got):.0f} (n={len(got)})" if got else "–"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if pretraining:
        lines += ["## Continued pretraining (once per task, shared by its cells)", "", "| run | CPU s | steps | command |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {r['cpu_s']:.0f} | {r.get('steps')} | `{r['command']}` |" for name, r in pretraining.items()]
        lines.append("")
    commits = sorted({c.get("commit", "not recorded") for c in cells})
    made_by = sorted({c.get("invocation", "not recorded") for c in cells})
    lines += ["## Provenance", "", *[f"- commit of the cells: `{c}`" for c in commits],
              *[f"- cells made by: `{c}`" for c in made_by], f"- this report: `{command}`",
              f"- nlp_ssl fine-tuning arguments: `{' '.join(settings.nlp_ssl_args())}`",
              f"- setfit: its defaults{'' if settings.setfit_max_steps < 0 else f', max_steps={settings.setfit_max_steps}'}; "
              f"{settings.threads} thread(s) per run", ""]
    text = "\n".join(lines)
    from nlp_ssl import atomic

    atomic.write_text(out / "results.md", text)
    atomic.write_json(out / "results.json", {"commits": commits, "made_by": made_by, "command": command, "cells": cells,
                                             "pretraining": pretraining, "settings": dataclasses.asdict(settings),
                                             "nlp_ssl_args": settings.nlp_ssl_args()}, indent=1)
    return text


# ------------------------------------------------------------------------------------------- setfit


def setfit_run(argv: list[str]) -> None:
    """One setfit training with its defaults (run in setfit's environment): predictions of the test rows."""
    parser = argparse.ArgumentParser(prog="bench_fewlabel.py setfit-run")
    parser.add_argument("--split", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--max_length", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max_steps", type=int, default=-1)
    args = parser.parse_args(argv)
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    def rows(name):
        return [json.loads(line) for line in Path(args.split, f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]

    model = SetFitModel.from_pretrained(args.body)
    sep = f" {model.model_body.tokenizer.sep_token} "

    def text(row):  # a sentence pair as the tokenizer's own "a [SEP] b"
        return row["text"] + sep + row["text_pair"] if "text_pair" in row else row["text"]

    train, test = rows("train"), rows("test")
    out = Path(args.out)
    training = TrainingArguments(seed=args.seed, max_length=args.max_length, output_dir=str(out / "checkpoints"),
                                 report_to="none", max_steps=args.max_steps)
    trainer = Trainer(model=model, args=training,
                      train_dataset=Dataset.from_dict({"text": [text(r) for r in train], "label": [r["label"] for r in train]}))
    trainer.train()
    predictions = model.predict([text(r) for r in test], batch_size=64, as_numpy=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps([int(p) for p in predictions]))


# --------------------------------------------------------------------------------------------- main


def parse_list(text: str, kind=str) -> list:
    return [kind(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["setfit-run"]:
        return setfit_run(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--k", default="8,32")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--workers", type=int, default=1, help="cells run at once")
    parser.add_argument("--max_steps", type=int, default=200, help="nlp_ssl fine-tuning steps")
    parser.add_argument("--setfit_max_steps", type=int, default=-1, help="setfit's max_steps (-1: its default)")
    parser.add_argument("--finetune_args", default="", help="more finetune_text arguments for the nlp_ssl runs, space-separated")
    parser.add_argument("--out", default=str(ROOT / "results" / "fewlabel"))
    parser.add_argument("--setfit_python", default=sys.executable, help="the interpreter that has setfit")
    parser.add_argument("--report_only", action="store_true", help="write the table from the finished cells")
    parser.add_argument("--keep_models", action="store_true", help="keep each cell's trained weights")
    args = parser.parse_args(argv)
    tasks, methods = parse_list(args.tasks), parse_list(args.methods)
    unknown = [t for t in tasks if t not in TASKS] + [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown task or method {unknown[0]!r}; tasks: {list(TASKS)}, methods: {list(METHODS)}")
    ks, seeds = parse_list(args.k, int), parse_list(args.seeds, int)
    settings = Settings(args.threads, args.max_steps, args.setfit_max_steps, tuple(args.finetune_args.split()))
    out = Path(args.out).resolve()
    data = out / "data"
    command = "python benchmarks/bench_fewlabel.py " + " ".join(argv)
    commit = git_commit()  # the code the cells of this invocation run
    pretraining, jobs = {}, []
    if not args.report_only:
        prepare_data(tasks, data)
    from nlp_ssl.models.builders import resolve_model_path

    for name in tasks:
        bodies = {"": resolve_model_path(BODY)}
        for kind in PRETRAININGS:
            if not any(m.endswith(f"+{kind}") for m in methods):
                continue
            record_file = out / "pretrain" / f"{name}_{kind}" / "pretrain.json"
            if args.report_only:
                if record_file.is_file():
                    pretraining[f"{name} {kind}"] = json.loads(record_file.read_text())
                continue
            pretraining[f"{name} {kind}"] = record = pretrained_body(TASKS[name], kind, data, out, args.threads)
            bodies[f"+{kind}"] = record["body"]
        jobs += [(name, k, seed, method, bodies.get(method[len(method.split("+")[0]):]))
                 for k in ks for seed in seeds for method in methods]

    failed = []

    def run(job) -> dict | None:
        name, k, seed, method, body = job
        if args.report_only:
            return finished_cell(cell_dir(out, name, k, seed, method), settings)
        try:
            cell = run_cell(TASKS[name], k, seed, method, body, data, out, settings, args.setfit_python,
                            {"commit": commit, "invocation": command}, args.keep_models)
        except RuntimeError as error:  # the other cells go on; the run ends with exit 1
            print(f"[cell] {name} k={k} seed={seed} {method}: FAILED {error}", flush=True)
            failed.append(job)
            return None
        how = "reused" if cell.get("reused") else "ran"
        print(f"[cell] {name} k={k} seed={seed} {method}: accuracy {cell['accuracy']:.3f} macro-F1 {cell['macro_f1']:.3f} "
              f"CPU {cell['cpu_s']:.0f} s ({how})", flush=True)
        return cell

    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        cells = [c for c in pool.map(run, jobs) if c is not None]
    print(report([{k: v for k, v in c.items() if k != "reused"} for c in cells], pretraining, out, command, settings))
    if failed:
        raise SystemExit(f"{len(failed)} cell(s) failed; their logs are run.log in their folders")


if __name__ == "__main__":
    main()
