"""What the fault tests share: a small MLM run, its corpus, and comparisons of what runs leave behind."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers import toy_texts, write_jsonl

SMALL = [
    "data.block_size=64", "impl.micro_batch_size=8", "train.global_batch_size=8", "log.every=1", "eval.every=100",
    "tokenizer.vocab_size=2000", "log.progress_bar=false", "data.validation_split=0.1", "log.report_to=[]",
]
#: A constant schedule: a run extended from max_steps 10 to 12 then equals a straight 12-step run.
CONSTANT = ["optim.lr_schedule=constant", "optim.warmup_ratio=0", "save.every=4", "save.total_limit=3"]


def write_corpus(folder: Path) -> Path:
    return write_jsonl(folder / "train.jsonl", [{"text": t} for t in toy_texts(400)])


def args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.train_file={corpus}", f"output_dir={out}", *SMALL, *extra]


def tensors_in(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor saved under ``folder``: safetensors files and torch pickles (optimizer state)."""
    found = {}
    for path in folder.rglob("*.safetensors"):
        found.update({f"{path}:{k}": v for k, v in load_file(str(path)).items()})
    for path in folder.rglob("*.bin"):
        state = torch.load(path, map_location="cpu", weights_only=False)
        stack = [(str(path), state)]
        while stack:
            name, value = stack.pop()
            if isinstance(value, torch.Tensor):
                found[name] = value
            elif isinstance(value, dict):
                stack.extend((f"{name}:{k}", v) for k, v in value.items())
            elif isinstance(value, (list, tuple)):
                stack.extend((f"{name}:{i}", v) for i, v in enumerate(value))
    return found


def status(out: Path) -> dict:
    return json.loads((out / "run_status.json").read_text())


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
