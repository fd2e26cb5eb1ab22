"""The GLUE harness (nlp_ssl/data/glue.py, nlp_ssl/text/glue_harness.py, recipes/glue.py) on small fixtures written
in both real layouts: the classic GLUE download (tsv) and a local copy of nyu-mll/glue (parquet)."""

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

from nlp_ssl.data.glue import TASKS, get_task, glue_average, load_task, task_score
from nlp_ssl.errors import DataError
from tests.helpers import WORDS, run_recipe

ENV = {"OMP_NUM_THREADS": "1"}


def sentence(rng, n=None):
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(4, 10))) + "."


def task_rows(name, n, seed):
    """``n`` rows of task ``name``: (text, pair or None, label as the Hub stores it)."""
    rng = random.Random(f"{name}-{seed}")
    task = TASKS[name]
    rows = []
    for i in range(n):
        label = round(rng.uniform(0, 5), 1) if task.regression else i % len(task.names)
        text = sentence(rng) if i % 5 else 'the "quoted" cat sat.'  # a bare quote, as real GLUE texts have
        rows.append((text, sentence(rng) if task.pair is not None else None, label))
    return rows


#: The real classic headers (CoLA has none), and how a row is laid out in them.
def classic_line(name, i, text, pair, label, dev=False):
    t = TASKS[name]
    lab = t.names[label] if name in ("mnli", "qnli", "rte") else str(label)
    if name == "cola":
        return f"gj04\t{label}\t{'' if label else '*'}\t{text}"
    if name == "sst2":
        return f"{text}\t{label}"
    if name == "mrpc":
        return f"{label}\t{1000 + i}\t{2000 + i}\t{text}\t{pair}"
    if name == "stsb":
        return f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{text}\t{pair}\t{label:.3f}"
    if name == "qqp":
        return f"{i}\t{2 * i}\t{2 * i + 1}\t{text}\t{pair}\t{label}"
    if name == "mnli":
        parses = "\t( x )\t( y )\t(ROOT x)\t(ROOT y)"
        votes = f"\t{lab}\t{lab}\t{lab}\t{lab}" if dev else ""
        return f"{i}\t{31193 + i}\t{31193 + i}n\tgovernment{parses}\t{text}\t{pair}\t{lab}{votes}\t{lab}"
    return f"{i}\t{text}\t{pair}\t{lab}"  # QNLI, RTE, WNLI


HEADERS = {
    "cola": None,
    "sst2": "sentence\tlabel",
    "mrpc": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
    "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
    "mnli": ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
             "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"),
    "mnli_dev": ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
                 "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"),
    "qnli": "index\tquestion\tsentence\tlabel",
    "rte": "index\tsentence1\tsentence2\tlabel",
    "wnli": "index\tsentence1\tsentence2\tlabel",
}
TRAIN, DEV = 30, 12


def split_files(name):
    """(classic stem, Hub split, rows) of each split of a task."""
    if name == "mnli":
        return [("train", "train", TRAIN), ("dev_matched", "validation_matched", DEV),
                ("dev_mismatched", "validation_mismatched", DEV)]
    return [("train", "train", TRAIN), ("dev", "validation", DEV)]


def write_classic(root, names):
    for name in names:
        folder = root / TASKS[name].folder
        folder.mkdir(parents=True)
        for stem, _, n in split_files(name):
            dev = stem != "train"
            header = HEADERS["mnli_dev" if name == "mnli" and dev else name]
            lines = [classic_line(name, i, *row, dev=dev) for i, row in enumerate(task_rows(name, n, stem))]
            (folder / f"{stem}.tsv").write_text("".join(f"{x}\n" for x in ([header] if header else []) + lines), encoding="utf-8")
        if name == "cola":  # the test file has a header and no labels; it is never read
            (folder / "test.tsv").write_text("index\tsentence\n0\tthe cat.\n", encoding="utf-8")
    return root


def write_parquet(root, names):
    for name in names:
        t = TASKS[name]
        folder = root / name
        folder.mkdir(parents=True)
        for stem, split, n in split_files(name):
            rows = task_rows(name, n, stem)
            frame = {t.hub_text: [r[0] for r in rows]}
            if t.hub_pair:
                frame[t.hub_pair] = [r[1] for r in rows]
            frame["label"] = np.asarray([r[2] for r in rows], dtype=np.float32 if t.regression else np.int64)
            frame["idx"] = np.arange(n, dtype=np.int32)
            pd.DataFrame(frame).to_parquet(folder / f"{split}-00000-of-00001.parquet")
        pd.DataFrame({t.hub_text: ["x"], "label": [-1], "idx": [0]}).to_parquet(folder / "test-00000-of-00001.parquet")
    return root


ALL = list(TASKS)


@pytest.mark.parametrize("name", ALL)
def test_both_layouts_read_the_same_rows(tmp_path, name):
    classic, _ = load_task(write_classic(tmp_path / "classic", [name]), get_task(name))
    hub, _ = load_task(write_parquet(tmp_path / "hub", [name]), get_task(name))
    assert set(classic) == set(hub) == ({"pool", "test", "test_mismatched"} if name == "mnli" else {"pool", "test"})
    for split in classic:
        a, b = classic[split], hub[split]
        assert a.column_names == b.column_names == (
            ["text", "label"] if name in ("cola", "sst2") else ["text", "text_pair", "label"]
        )
        assert a["text"][:] == b["text"][:] and (name in ("cola", "sst2") or a["text_pair"][:] == b["text_pair"][:])
        np.testing.assert_allclose(np.asarray(a["label"][:]), np.asarray(b["label"][:]), atol=1e-6)
    expected = [r[2] for r in task_rows(name, TRAIN, "train")]
    np.testing.assert_allclose(np.asarray(classic["pool"]["label"][:]), expected, atol=1e-3)
    assert '"quoted"' in classic["pool"]["text"][0]  # read with no quoting, as GLUE's tsv files need
    if not TASKS[name].regression:
        assert classic["pool"].features["label"].names == list(TASKS[name].names)


def test_bad_glue_files_are_named_with_the_line(tmp_path):
    root = write_classic(tmp_path, ["mrpc", "rte", "stsb"])
    path = root / "RTE" / "train.tsv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tmaybe"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"RTE/train.tsv line 4: label 'maybe' is not one of RTE's classes"):
        load_task(root, get_task("rte"))
    path = root / "STS-B" / "dev.tsv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\thigh"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"STS-B/dev.tsv line 3: label 'high' is not a number"):
        load_task(root, get_task("stsb"))
    mrpc = root / "MRPC" / "train.tsv"
    mrpc.write_text(mrpc.read_text().replace("#2 String", "String 2"))
    with pytest.raises(DataError, match=r"column '#2 String' not found in the header"):
        load_task(root, get_task("mrpc"))
    with pytest.raises(DataError, match="glue task 'squad' is unknown"):
        get_task("squad")


def test_average_is_the_mean_of_each_tasks_mean_metric():
    scores = {"mrpc": task_score({"f1": 0.9, "accuracy": 0.8}), "cola": task_score({"matthews_correlation": 0.2}),
              "mnli": task_score({"accuracy_matched": 0.7, "accuracy_mismatched": 0.6})}
    assert scores["mrpc"] == pytest.approx(0.85) and scores["mnli"] == pytest.approx(0.65)
    assert glue_average(scores) == pytest.approx((0.85 + 0.2 + 0.65) / 3)


# ------------------------------------------------------------------------------ end to end (slow)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny 'pretrained' BERT saved with a WordPiece tokenizer, as pretrain_mlm.py leaves one."""
    from transformers import BertConfig, BertForMaskedLM

    from nlp_ssl.text.tokenizers import train_tokenizer
    from tests.helpers import toy_texts

    folder = tmp_path_factory.mktemp("ckpt") / "bert"
    tok = train_tokenizer("wordpiece", toy_texts(300), 400, folder)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64,
                               pad_token_id=tok.pad_token_id)).save_pretrained(folder)
    return folder


QUICK = ["glue.epochs=null", "train.max_steps=4", "eval.every=2", "impl.micro_batch_size=8", "train.global_batch_size=8",
         "eval.batch_size=32",
         "data.validation_per_class=2", "data.max_length=32", "log.progress_bar=false", "log.every=2", "optim.learning_rate=1e-3"]


def check_summary(out, tasks, skipped=()):
    summary = json.loads((out / "glue_results.json").read_text())
    assert list(summary["tasks"]) == tasks and sorted(summary["skipped"]) == sorted(skipped)
    for name in tasks:
        task = TASKS[name]
        devs = [d for d, _, _ in task.devs]
        expected = {f"{m}_{d}" if d else m for m in task.metrics for d in devs}
        metrics = summary["tasks"][name]["metrics"]
        assert set(metrics) == expected, name
        # The harness reports what finetune() scored on the dev set of that very run.
        run = json.loads((out / name / "seed42" / "all_results.json").read_text())
        first = task.metrics[0]
        assert summary["runs"][name]["42"][first + (f"_{devs[0]}" if devs[0] else "")] == pytest.approx(run[f"test_{first}"])
        for key, value in metrics.items():  # the mean over seeds
            assert value == pytest.approx(np.mean([r[key] for r in summary["runs"][name].values()]))
        assert run["test_examples"] == DEV and summary["tasks"][name]["dev_examples"] == DEV
        assert summary["tasks"][name]["score"] == pytest.approx(np.mean(list(metrics.values())))
        assert not (out / name / "seed42" / "model.safetensors").exists()  # glue.save_models=false
    assert summary["average"] == pytest.approx(np.mean([summary["tasks"][t]["score"] for t in tasks]))
    table = (out / "glue_results.md").read_text()
    assert f"**{100 * summary['average']:.1f}**" in table
    for name in skipped:
        assert f"| {TASKS[name].folder} | skipped: no {TASKS[name].folder}/train.tsv" in table
    return summary


@pytest.mark.slow
def test_glue_end_to_end_on_the_classic_layout(tmp_path, tiny_checkpoint):
    data = write_classic(tmp_path / "glue_data", ALL)
    out = tmp_path / "out"
    proc = run_recipe("glue.py", f"model.name_or_path={tiny_checkpoint}", f"glue.data_dir={data}", f"output_dir={out}",
                      f"glue.tasks=[{','.join(ALL)}]", *QUICK, "glue.task_overrides={rte: [train.max_steps=2]}", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = check_summary(out, ALL)
    assert json.loads((out / "rte" / "seed42" / "all_results.json").read_text())["steps"] == 2
    assert json.loads((out / "cola" / "seed42" / "all_results.json").read_text())["steps"] == 4
    assert "| MNLI | accuracy_matched" in proc.stdout and "average" in proc.stdout
    card = (out / "stsb" / "seed42" / "README.md").read_text()
    assert "model-index:" in card and "type: pearsonr" in card and "nyu-mll/glue" in card and "https://github.com/)" not in card
    assert summary["tasks"]["stsb"]["train_examples"] == TRAIN - 2


@pytest.mark.slow
def test_glue_end_to_end_on_the_hub_parquet_layout_skips_missing_tasks(tmp_path, tiny_checkpoint):
    present = ["cola", "mrpc", "stsb", "mnli"]
    data = write_parquet(tmp_path / "glue", present)
    out = tmp_path / "out"
    proc = run_recipe("glue.py", f"model.name_or_path={tiny_checkpoint}", f"glue.data_dir={data}", f"output_dir={out}",
                      "glue.tasks=[cola,mrpc,stsb,qqp,mnli,rte]", "glue.seeds=[42,7]", *QUICK, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = check_summary(out, present, skipped=["qqp", "rte"])
    assert set(summary["runs"]["mrpc"]) == {"42", "7"}
    f1 = [summary["runs"]["mrpc"][s]["f1"] for s in ("42", "7")]
    assert summary["tasks"]["mrpc"]["metrics"]["f1"] == pytest.approx(np.mean(f1))


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["glue.tasks=[cola,squad]"], "glue task 'squad' is unknown"),
    (["glue.tasks=[qqp]"], "none of the tasks ['qqp'] is there"),
    (["glue.task_overrides={cola: [learning_rat=1]}"],
     "glue.task_overrides.cola: command line: unknown config key 'learning_rat'"),
])
def test_glue_bad_settings_fail_with_one_line(tmp_path, tiny_checkpoint, args, expected):
    data = write_classic(tmp_path / "glue_data", ["cola"])
    proc = run_recipe("glue.py", f"model.name_or_path={tiny_checkpoint}", f"glue.data_dir={data}", f"output_dir={tmp_path}/out",
                      *QUICK, *args, env=ENV)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, last
