"""The accelerate configs for DDP, FSDP and DeepSpeed, and what each backend needs from the trainer.

FSDP and DeepSpeed cannot run on this CPU machine (accelerate enables FSDP only for GPU processes;
DeepSpeed is not installed), so their trainer branches are checked here with accelerate's own
DeepSpeed code path driven by a stand-in engine: the same updates as the hand-accumulated DDP path.
"""

import logging
from types import SimpleNamespace

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM

from nlp_ssl.config import build_config
from nlp_ssl.data.text import tokenize_and_pack
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.trainer import TrainConfig, Trainer
from nlp_ssl.training import backends
from tests.helpers import ROOT, toy_texts

CONFIGS = ROOT / "recipes" / "configs" / "accelerate"


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def test_the_shipped_accelerate_configs_load_and_ask_for_their_backend():
    configs = {path.stem: ClusterConfig.from_yaml_file(str(path)) for path in sorted(CONFIGS.glob("*.yaml"))}
    assert set(configs) == {"ddp", "fsdp", "deepspeed_zero2", "multi_node"}
    # Several machines (tests/test_multi_node.py launches with it): DDP, machine 0 hosting the rendezvous.
    multi = configs.pop("multi_node")
    assert multi.distributed_type == DistributedType.MULTI_GPU and multi.num_machines > 1 and multi.rdzv_backend == "static"
    assert configs["ddp"].distributed_type == DistributedType.MULTI_GPU
    fsdp = configs["fsdp"]
    assert fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_version"] == 2 and fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    ds = configs["deepspeed_zero2"]
    assert ds.distributed_type == DistributedType.DEEPSPEED and ds.deepspeed_config["zero_stage"] == 2
    # The trainer fills these from the run; a number here would have to match it.
    assert ds.deepspeed_config["gradient_accumulation_steps"] == "auto" and ds.deepspeed_config["gradient_clipping"] == "auto"
    for config in configs.values():
        assert config.num_machines == 1 and not config.use_cpu


def fake_accelerator(kind, num_processes=2):
    return SimpleNamespace(distributed_type=kind, num_processes=num_processes, is_local_main_process=True)


def test_an_fsdp_launch_on_cpu_processes_says_it_runs_ddp(monkeypatch, caplog):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with caplog.at_level(logging.WARNING, logger="nlp_ssl.training.backends"):
        backends.warn_if_replaced(fake_accelerator(DistributedType.MULTI_CPU))
    assert "FSDP was launched (ACCELERATE_USE_FSDP=true), but accelerate runs it only on GPUs: these 2 process(es) " \
           "train with MULTI_CPU instead" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nlp_ssl.training.backends"):
        backends.warn_if_replaced(fake_accelerator(DistributedType.FSDP))
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
        backends.warn_if_replaced(fake_accelerator(DistributedType.MULTI_CPU))
    assert caplog.text == ""


def test_deepspeed_config_gets_the_runs_batch_sizes_and_clipping():
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "zero_optimization": {}}
    backends.fill_deepspeed_config(ds, micro_batch_size=8, accumulation=4, num_processes=2, max_grad_norm=1.0)
    assert ds == {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4, "train_batch_size": 64,
                  "gradient_clipping": 1.0, "zero_optimization": {}}
    backends.fill_deepspeed_config(dict(ds), 8, 4, 2, 1.0)  # numbers that agree are kept
    with pytest.raises(ConfigError, match=r"^DeepSpeed config gradient_accumulation_steps=2 disagrees with this run's 4 "):
        backends.fill_deepspeed_config({"gradient_accumulation_steps": 2}, 8, 4, 2, 1.0)


class Recorder:
    """An accelerator stand-in that records which micro-batches ran under ``no_sync``."""

    def __init__(self, kind):
        self.distributed_type, self.sync_gradients, self.held = kind, True, []

    def no_sync(self, model):
        self.held.append(model)
        return torch.enable_grad()  # any context manager


def test_each_backend_gets_its_own_accumulation():
    ddp = Recorder(DistributedType.MULTI_GPU)
    for i in range(3):
        with backends.micro_step(ddp, "model", last=i == 2):
            pass
    assert ddp.held == ["model", "model"] and backends.loss_factor(ddp, 3) == 1
    ds = Recorder(DistributedType.DEEPSPEED)
    boundaries = []
    for i in range(3):
        with backends.micro_step(ds, "model", last=i == 2):
            boundaries.append(ds.sync_gradients)
    assert ds.held == [] and boundaries == [False, False, True] and backends.loss_factor(ds, 3) == 3


class StandInEngine:
    """What accelerate's DeepSpeedEngineWrapper does with a loss, minus DeepSpeed: the engine divides
    each micro-batch's loss by gradient_accumulation_steps before backward (``scale_wrt_gas``), and at
    the boundary clips; the optimizer step itself is left to the trainer's (a no-op under DeepSpeed)."""

    def __init__(self, model, gas, max_norm):
        self.model, self.gas, self.max_norm, self.boundaries, self.norm = model, gas, max_norm, [], None

    def backward(self, loss, sync_gradients=True):
        self.boundaries.append(sync_gradients)
        (loss / self.gas).backward()
        if sync_gradients:
            self.norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)

    def get_global_grad_norm(self):
        return self.norm


@pytest.fixture(scope="module")
def blocks(wordpiece_tokenizer):
    return tokenize_and_pack(Dataset.from_dict({"text": toy_texts(120, seed=2)}), wordpiece_tokenizer, "text", 32)


def train(tmp_path, tok, blocks, deepspeed: bool):
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    cfg = build_config(TrainConfig, {
        "output_dir": str(tmp_path), "train.max_steps": 4, "train.global_batch_size": 12, "impl.micro_batch_size": 4,
        "optim.learning_rate": 3e-3, "eval.every": 100, "save.every": 100, "log.every": 1, "log.report_to": [],
        "log.progress_bar": False, "seed": 2, "train.max_grad_norm": 0.5,
    })
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    trainer = Trainer(cfg, MaskedLMTask(BertForMaskedLM(config)), blocks, MLMCollator(tok, mlm_probability=0.3, seed=1))
    engine = None
    if deepspeed:  # accelerate's DeepSpeed branch of backward() and clip_grad_norm_(), for the training loop only
        acc = trainer.accelerator
        engine = StandInEngine(trainer.model, trainer.accumulation, cfg.train.max_grad_norm)
        acc.deepspeed_engine_wrapped = engine
        acc.state.distributed_type = DistributedType.DEEPSPEED
        acc.state.deepspeed_plugins = SimpleNamespace(deepspeed_config={})  # fp32: no fp16/bf16 section
        finish = trainer._finish

        def back_to_cpu_then_finish(*args):
            acc.state.distributed_type = DistributedType.NO
            return finish(*args)

        trainer._finish = back_to_cpu_then_finish
    results = trainer.fit()
    return {k: v.clone() for k, v in trainer.unwrapped_task.state_dict().items()}, results, engine


def test_the_deepspeed_branch_gives_the_same_updates_as_hand_accumulation(tmp_path, wordpiece_tokenizer, blocks):
    manual, manual_results, _ = train(tmp_path / "manual", wordpiece_tokenizer, blocks, deepspeed=False)
    ds, ds_results, engine = train(tmp_path / "ds", wordpiece_tokenizer, blocks, deepspeed=True)
    assert engine.boundaries == [False, False, True] * 4  # three micro-batches a step, one boundary each
    for name in manual:
        torch.testing.assert_close(ds[name], manual[name], rtol=1e-5, atol=1e-6, msg=name)
    assert ds_results["train_loss"] == pytest.approx(manual_results["train_loss"], rel=1e-6)
    assert any(not torch.equal(manual[n], v) for n, v in train_initial(wordpiece_tokenizer).items())  # it trained


def train_initial(tok):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return {f"model.{k}": v for k, v in BertForMaskedLM(config).state_dict().items()}


def test_fsdp2_values_become_plain_tensors(tmp_path):
    """FSDP2's clipped norm and parameters are DTensors: the trainer's health checks read plain tensors."""
    import torch.distributed as dist
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        norm = distribute_tensor(torch.tensor(2.5), mesh, [Replicate()])
        weight = distribute_tensor(torch.arange(6.0).reshape(3, 2), mesh, [Shard(0)])
        assert type(backends.full(norm)) is torch.Tensor and backends.full(norm).item() == 2.5
        shard = backends.local(weight)
        assert type(shard) is torch.Tensor and torch.equal(shard, torch.arange(6.0).reshape(3, 2))
        plain = torch.ones(2)
        assert backends.full(plain) is plain and backends.local(plain) is plain
    finally:
        dist.destroy_process_group()

