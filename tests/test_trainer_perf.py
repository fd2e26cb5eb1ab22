"""The trainer on the machine: micro_batch_size auto, CPU threads per process, bf16 detection, TF32,
time_budget, torch.compile, fused AdamW, DataLoader workers and the attention implementation."""

import json
import os
import subprocess
import sys

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from nlp_ssl.config import build_config, load_config
from nlp_ssl.errors import ConfigError, RunComplete
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.trainer import (
    TrainConfig,
    Trainer,
    gradient_accumulation_steps,
    parse_duration,
    resolve_micro_batch_size,
    resolve_mixed_precision,
)
from nlp_ssl.training import checkpointing as ckpt
from nlp_ssl.training import machine
from nlp_ssl.training.run_config import MOVED_TRAIN_KEYS
from tests.helpers import ROOT

CORES = len(os.sched_getaffinity(0))


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture
def data(toy_mlm_blocks):
    return toy_mlm_blocks


def tiny_task(tok, dropout=0.0, layers=1):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=0.0,
    )
    return MaskedLMTask(BertForMaskedLM(config))


def config(out, **overrides):
    """A run config; ``overrides`` by their names in a section (``max_steps``, ``micro_batch_size`` ...)."""
    values = {"output_dir": str(out), "train.max_steps": 4, "train.global_batch_size": 16, "optim.learning_rate": 3e-3,
              "eval.every": 100, "save.every": 100, "log.every": 1, "log.report_to": [], "log.progress_bar": False,
              "seed": 7, "impl.peak_flops": 1e12}
    return build_config(TrainConfig, {**values, **{MOVED_TRAIN_KEYS.get(k, k): v for k, v in overrides.items()}})


def trainer_for(out, tok, data, eval_data=True, dropout=0.0, layers=1, **overrides):
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Trainer(config(out, **overrides), tiny_task(tok, dropout, layers), data[0], MLMCollator(tok, seed=1),
                   eval_dataset=data[1] if eval_data else None, processor=tok)


# ------------------------------------------------------------------ micro_batch_size


def test_micro_batch_size_auto_splits_the_global_batch_over_the_processes():
    cfg = build_config(TrainConfig, {"train.global_batch_size": 32})
    assert cfg.impl.micro_batch_size == "auto"
    assert [resolve_micro_batch_size(cfg, n) for n in (1, 2, 4)] == [32, 16, 8]
    assert [gradient_accumulation_steps(cfg, n) for n in (1, 2, 4)] == [1, 1, 1]
    with pytest.raises(ConfigError, match=r"^train.global_batch_size 30 cannot be split evenly over 4 processes "
                                          r"\(impl.micro_batch_size auto\): use a multiple of 4, or set impl.micro_batch_size$"):
        resolve_micro_batch_size(build_config(TrainConfig, {"train.global_batch_size": 30}), 4)
    # An explicit cap is accumulated; one that does not divide keeps its one-line error.
    assert gradient_accumulation_steps(build_config(TrainConfig, {
        "train.global_batch_size": 32, "impl.micro_batch_size": 8,
    }), 2) == 2
    with pytest.raises(ConfigError, match=r"^train.global_batch_size 32 is not a multiple of impl.micro_batch_size 32 × 2 "
                                          r"process\(es\)$"):
        gradient_accumulation_steps(build_config(TrainConfig, {"train.global_batch_size": 32, "impl.micro_batch_size": 32}), 2)


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("16", 16), ("16.0", 16),
    ("abc", "impl.micro_batch_size must be an integer or auto, got 'abc'"),
    ("0", "impl.micro_batch_size must be > 0, got 0"),
    ("true", "impl.micro_batch_size must be an integer or auto, got True"),
])
def test_micro_batch_size_from_the_command_line(value, expected):
    if isinstance(expected, str) and expected != "auto":
        with pytest.raises(ConfigError, match=f"^{expected}$"):
            load_config(TrainConfig, overrides=[f"impl.micro_batch_size={value}"])
    else:
        assert load_config(TrainConfig, overrides=[f"impl.micro_batch_size={value}"]).impl.micro_batch_size == expected


def test_the_trainer_uses_the_resolved_micro_batch_also_for_a_batch_sampler(tmp_path, wordpiece_tokenizer, data):
    from torch.utils.data import BatchSampler, SequentialSampler

    trainer = trainer_for(tmp_path / "a", wordpiece_tokenizer, data, eval_data=False)
    assert trainer.config.impl.micro_batch_size == 16 and trainer.accumulation == 1
    sampler = BatchSampler(SequentialSampler(range(len(data[0]))), 8, drop_last=True)
    AcceleratorState._reset_state(True)
    with pytest.raises(ConfigError, match=r"^batch_sampler gives batches of 8, not micro_batch_size 16$"):
        Trainer(config(tmp_path / "b"), tiny_task(wordpiece_tokenizer), data[0], MLMCollator(wordpiece_tokenizer),
                batch_sampler=sampler)
    AcceleratorState._reset_state(True)
    trainer = Trainer(config(tmp_path / "c", global_batch_size=8), tiny_task(wordpiece_tokenizer), data[0],
                      MLMCollator(wordpiece_tokenizer), batch_sampler=sampler)
    assert trainer.config.impl.micro_batch_size == 8


# ------------------------------------------------------------------ CPU threads


def test_threads_are_the_process_share_of_the_cores_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert machine.set_cpu_threads(2)[0] == torch.get_num_threads() == max(CORES // 2, 1)
    assert machine.set_cpu_threads(10 * CORES)[0] == 1  # at least one

    not_a_launcher, bare_launcher = None, ({"PATH"}, ["python", "-m", "accelerate.commands.launch", "x.py"])
    for parent, user_value in [(not_a_launcher, "1"),  # `OMP_NUM_THREADS=1 python recipe.py`
                               (bare_launcher, None),  # the launcher's own 1
                               (({"PATH", "OMP_NUM_THREADS"}, ["accelerate", "launch", "x.py"]), "1"),
                               (({"PATH"}, ["torchrun", "--num_cpu_threads_per_process", "1", "x.py"]), "1")]:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(machine, "_launcher_start", lambda pid, parent=parent: parent)
        assert machine.users_thread_count() == user_value
        threads, why = machine.set_cpu_threads(1)
        assert threads == torch.get_num_threads() == (1 if user_value else CORES)
        assert ("the user's OMP_NUM_THREADS=1" in why) == bool(user_value)


PROBE = """
import json
from nlp_ssl.training import machine
threads, why = machine.set_cpu_threads(machine.local_world_size(1))
print("THREADS", json.dumps({"threads": threads, "why": why}))
"""


@pytest.mark.slow
def test_under_accelerate_launch_a_process_gets_the_cores_unless_the_user_set_threads(tmp_path):
    """accelerate launch writes OMP_NUM_THREADS=1 into the process when it was given no thread count."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    cases = {"none": ([], None), "OMP_NUM_THREADS=1": ([], "1"), "--num_cpu_threads_per_process 1":
             (["--num_cpu_threads_per_process", "1"], None)}
    running = {}
    for name, (launcher_args, omp) in cases.items():  # side by side: each is mostly start-up
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env["PYTHONPATH"] = str(ROOT)
        if omp is not None:
            env["OMP_NUM_THREADS"] = omp
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *launcher_args, str(script)]
        running[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                         cwd=tmp_path)
    seen = {}
    for name, proc in running.items():
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr[-2000:]
        line = next(line for line in stdout.splitlines() if line.startswith("THREADS "))
        seen[name] = json.loads(line[len("THREADS "):])
    assert seen["none"]["threads"] == CORES
    assert seen["OMP_NUM_THREADS=1"] == seen["--num_cpu_threads_per_process 1"] == {
        "threads": 1, "why": "the user's OMP_NUM_THREADS=1"}


# ------------------------------------------------------------------ precision and TF32


def test_auto_precision_is_bf16_only_on_cpus_with_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: True)
    assert resolve_mixed_precision("auto") == "no"  # off until its accuracy is shown (machine.CPU_BF16_AUTO)
    monkeypatch.setattr(machine, "CPU_BF16_AUTO", True)
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision("fp16") == "fp16"
    monkeypatch.setattr(machine, "CPU_BF16_AUTO", False)  # the switch, should bf16 cost quality
    assert resolve_mixed_precision("auto") == "no"
    monkeypatch.setattr(machine, "CPU_BF16_AUTO", True)
    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: False)
    assert resolve_mixed_precision("auto") == "no"
    # This machine's own answer is what torch reports of its CPU.
    monkeypatch.undo()
    assert machine.cpu_has_native_bf16() == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_a_run_on_a_bf16_cpu_trains_in_bf16_autocast(tmp_path, wordpiece_tokenizer, data, monkeypatch):
    monkeypatch.setattr(machine, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(machine, "CPU_BF16_AUTO", True)  # the switch that makes auto pick it on such CPUs
    trainer = trainer_for(tmp_path, wordpiece_tokenizer, data, eval_data=False, max_steps=2)
    seen = []
    dense = trainer.unwrapped_task.model.bert.encoder.layer[0].intermediate.dense
    dense.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    results = trainer.fit()
    assert results["mixed_precision"] == "bf16" and seen == [torch.bfloat16] * 2
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())  # autocast: the weights stay fp32


def test_tf32_only_on_cuda_capability_8_and_later(monkeypatch):
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    try:
        assert machine.set_tf32(True, torch.device("cpu")) is False
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
        assert machine.set_tf32(True, torch.device("cuda")) is False and matmul.fp32_precision == before[0]
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
        assert machine.set_tf32(True, torch.device("cuda")) is True
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        assert machine.set_tf32(False, torch.device("cuda")) is False
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


# ------------------------------------------------------------------ time_budget


@pytest.mark.parametrize("text, seconds", [("1800", 1800), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5h", 5400),
                                           (0.25, 0.25)])
def test_time_budget_in_seconds_minutes_or_hours(text, seconds):
    assert parse_duration(text) == seconds
    assert load_config(TrainConfig, overrides=[f"train.time_budget={text}"]).train.time_budget_s == seconds


@pytest.mark.parametrize("text", ["abc", "0", "-5", "10x", "inf", ""])
def test_a_bad_time_budget_is_one_line(text):
    with pytest.raises(ConfigError, match=r"^train.time_budget must be a positive number of seconds or a number with s, m "
                                          r"or h \(e\.g\. 1800, 30m, 2h\), got "):
        build_config(TrainConfig, {"train.time_budget": text})


def test_time_budget_ends_the_run_as_max_steps_would_and_counts_over_resumes(tmp_path, wordpiece_tokenizer, data):
    out = tmp_path / "run"
    trainer_for(out, wordpiece_tokenizer, data, max_steps=5, save_every=4).fit()
    spent = json.loads((out / "checkpoints" / "step_00000004" / ckpt.STATE_FILE).read_text())["train_time_s"]
    assert spent > 0
    (out / ckpt.RESULTS_FILE).unlink()  # continue that run past its end
    # The budget is what the first 4 steps took: the resumed run has one step left, not another 4.
    trainer = trainer_for(out, wordpiece_tokenizer, data, max_steps=1000, resume="auto", time_budget=str(spent),
                          eval_every=1000)
    results = trainer.fit()
    assert results["steps"] == 5 and results["train_time_s"] >= spent
    assert results["stopped_early"] is True and results["stop_reason"] == "time_budget"
    saved = json.loads((out / ckpt.RESULTS_FILE).read_text())
    assert saved["stop_reason"] == "time_budget" and "eval_loss" in saved  # evaluated at the stop, as at max_steps
    assert [h["step"] for h in trainer.state.history if "eval_loss" in h][-1] == 5
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints" / "step_00000005").exists()
    with pytest.raises(RunComplete, match="holds a finished run"):  # resume=auto: nothing left to do
        ckpt.resolve_resume("auto", out / "checkpoints", 1000)


# ------------------------------------------------------------------ fused AdamW, workers, attention


def test_fused_adamw_matches_the_plain_update(tmp_path, wordpiece_tokenizer, data):
    trainer = trainer_for(tmp_path, wordpiece_tokenizer, data, eval_data=False)
    assert trainer.optimizer.defaults["fused"] is True
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) for p in params]
    start = [p.detach().clone() for p in params]

    def one_step(fused: bool) -> list[torch.Tensor]:
        copies = [torch.nn.Parameter(s.clone()) for s in start]
        index = {id(p): i for i, p in enumerate(params)}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [copies[index[id(p)]] for p in g["params"]]}
                  for g in trainer.optimizer.param_groups]
        for g in groups:
            g.pop("fused", None), g.pop("foreach", None)
        for copy, grad in zip(copies, grads):
            copy.grad = grad.clone()
        torch.optim.AdamW(groups, fused=fused, foreach=None if fused else False).step()
        return [c.detach() for c in copies]

    fused, plain = one_step(True), one_step(False)
    for f, p, s in zip(fused, plain, start):
        torch.testing.assert_close(f, p, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(p, s) for p, s in zip(plain, start))


def test_workers_give_the_same_batches_as_the_main_process_across_epochs(tmp_path, wordpiece_tokenizer, data):
    """Masks follow the epoch (set_epoch): workers must see the new epoch, not keep the first one's."""
    small = (data[0].select(range(48)), data[1])  # 3 batches of 16 an epoch

    def first_batches(out, **overrides):
        trainer = trainer_for(out, wordpiece_tokenizer, small, eval_data=False, **overrides)
        batches = trainer._micro_batches()
        return trainer, [next(batches) for _ in range(7)]  # into the third epoch

    _, main = first_batches(tmp_path / "a")
    trainer, workers = first_batches(tmp_path / "b", num_workers=2, prefetch_factor=3)
    assert trainer.train_loader.num_workers == 2 and trainer.train_loader.prefetch_factor == 3
    assert trainer.train_loader.persistent_workers is False  # the MLM collator has set_epoch
    for i, (a, b) in enumerate(zip(main, workers)):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (i, key)
    assert not torch.equal(main[0]["labels"], main[3]["labels"])  # epoch 1 masks differently


@pytest.mark.parametrize("arch", ["bert", "modernbert", "xlm"])
def test_the_built_model_uses_the_chosen_attention(arch):
    from nlp_ssl.models import ModelConfig, build_model

    def attention(choice):
        fields = {"xlm": {"n_langs": 2}, "modernbert": dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                                           sep_token_id=2)}.get(arch, {})
        model = build_model(ModelConfig(arch=arch, size="tiny", attn_implementation=choice), "masked_lm", vocab_size=100,
                            **fields)
        return model.config._attn_implementation

    assert attention("eager") == "eager"
    assert attention("sdpa") == ("eager" if arch == "xlm" else "sdpa")  # XLM has no sdpa path
    assert load_config(ModelConfig, overrides=[]).attn_implementation == "sdpa"
    with pytest.raises(ConfigError, match=r"not one of \['sdpa', 'eager', 'flash_attention_2'\]"):
        load_config(ModelConfig, overrides=["attn_implementation=flash"])
    if not machine_has_flash_attn():
        with pytest.raises(ConfigError, match="^model.attn_implementation flash_attention_2 needs the flash-attn package"):
            ModelConfig(attn_implementation="flash_attention_2")


def machine_has_flash_attn() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return is_flash_attn_2_available()


# ------------------------------------------------------------------ compile


@pytest.mark.slow
def test_compiled_training_saves_plain_folders_and_resumes_exactly(tmp_path, wordpiece_tokenizer, data):
    """A compiled run: the same keys as without compile in checkpoints and the HF folder, close to the
    uncompiled run, and bit-identical when resumed (in a fresh compile) from its mid-run checkpoint.

    No transformer block (compiling one costs more than the rest of this test): what makes compiled
    runs differ is here, the embeddings' gradients (atomic adds) and the sparse MLM head (new sizes
    every batch)."""
    small = (data[0].select(range(48)), data[1])
    args = dict(max_steps=4, save_every=2, global_batch_size=8, eval_data=False, layers=0)

    def run(out, compile, resume=None):
        torch._dynamo.reset()  # each run compiles afresh, as a new process would
        trainer = trainer_for(out, wordpiece_tokenizer, small, compile=compile, resume=resume, **args)
        trainer.fit()
        return trainer

    plain = run(tmp_path / "plain", False)
    straight = run(tmp_path / "straight", True)
    assert straight.unwrapped_task._compiled_call_impl is not None
    folder = load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert folder.keys() == load_file(str(tmp_path / "plain" / "model.safetensors")).keys()
    checkpoint = tmp_path / "straight" / "checkpoints" / "step_00000002"
    saved = load_file(str(checkpoint / "model.safetensors"))  # accelerate's copy of the task
    assert saved.keys() == load_file(str(tmp_path / "plain" / "checkpoints" / "step_00000002" / "model.safetensors")).keys()
    assert not [k for k in saved if "_orig_mod" in k]
    reloaded = BertForMaskedLM.from_pretrained(tmp_path / "straight").state_dict()
    for name, tensor in folder.items():
        assert torch.equal(reloaded[name], tensor), name
    # Close to the eager run, measured against how far training moved each tensor: Adam divides by the
    # gradient's own scale, so a last-bit difference in a gradient near zero (the tied decoder's rows of
    # unseen tokens) moves an element by up to the learning rate, on one CPU's kernels and not another's.
    init = tiny_task(wordpiece_tokenizer, layers=0).state_dict()
    a, b = plain.unwrapped_task.state_dict(), straight.unwrapped_task.state_dict()
    for name in a:
        moved = torch.linalg.vector_norm((a[name] - init[name]).float())
        assert moved > 0 or torch.equal(a[name], b[name]), name
        assert torch.linalg.vector_norm((a[name] - b[name]).float()) <= 1e-2 * moved, name

    resumed = run(tmp_path / "resumed", True, resume=str(checkpoint))
    assert resumed.state.step == 4
    c = resumed.unwrapped_task.state_dict()
    for name in b:
        assert torch.equal(b[name], c[name]), name


# ------------------------------------------------------------------ end to end under DDP


@pytest.mark.slow
def test_two_process_launch_with_the_default_micro_batch_and_a_time_budget(tmp_path, wiki_jsonl):
    """`accelerate launch --multi_gpu --num_processes 2` with the default micro_batch_size: each process
    takes half the global batch and half the cores; both stop together when the time budget is spent
    (resume=auto then finds a finished run: test_time_budget_ends_the_run_as_max_steps_would...)."""
    out = tmp_path / "run"
    args = [f"data.train_file={wiki_jsonl}", f"output_dir={out}", "data.block_size=64", "train.global_batch_size=8",
            "tokenizer.vocab_size=2000", "log.progress_bar=false", "data.validation_split=0.1", "eval.batches=2",
            "train.max_steps=100000", "eval.every=100000", "save.every=100000", "log.every=5", "train.time_budget=2s"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29551"]
    script = str(ROOT / "recipes" / "pretrain_mlm.py")
    proc = subprocess.run([*launcher, script, *args], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "micro-batch 4 × 1 accumulation × 2 process(es) = 8" in proc.stderr
    results = json.loads((out / "all_results.json").read_text())
    assert results["stop_reason"] == "time_budget" and results["stopped_early"] is True
    assert 1 <= results["steps"] < 100000 and results["train_time_s"] >= 2.0
    assert results["threads_per_process"] == max(CORES // 2, 1) and "eval_loss" in results
    assert results["train_tokens"] == results["steps"] * 8 * 64
