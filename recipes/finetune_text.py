"""Fine-tune a pretrained (or freshly initialised) encoder/decoder on text classification.

    accelerate launch recipes/finetune_text.py [--config recipes/configs/finetune_text.yaml] [key=value ...]

Starts from an nlp_ssl checkpoint (BERT, ModernBERT, GPT-2, XLM), any HF checkpoint folder, or the same
architecture with fresh weights (``model.load_weights=false``: the from-scratch baseline). Optional
auxiliary LM loss (``finetune.aux_lm``; GPT-1 §3.2). The labelled pool is split into a validation set
(``data.validation_per_class`` rows per class, drawn with a fixed seed so every run is selected on the
same rows) and ``data.k_per_class`` training rows per class (seeded by ``seed``); the test set is
never seen until the end, where test accuracy and macro-F1 (local evaluate metrics) of the best
and of the last model go into ``all_results.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.labels import drop_classes, load_labeled_dataset, sample_k_per_class
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.metrics import compute_classification_metrics
from nlp_ssl.models import ModelConfig, build_model, special_token_fields
from nlp_ssl.models.builders import max_positions
from nlp_ssl.reporting import RunDescription
from nlp_ssl.tasks.classification import ClassificationCollator, SequenceClassificationTask, is_causal, pretrained_lm_head
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator

logger = logging.getLogger("nlp_ssl.finetune_text")

BUILTIN_TOPIC = "builtin:wiki_topic"


@dataclass
class ClassificationDataConfig:
    #: ``builtin:wiki_topic``: the built-in corpus's ``topic`` labels, 11 classes ("Uncategorized"
    #: dropped), pool = en_train, test = en_test. Ignored when ``train_file`` is set.
    source: str = BUILTIN_TOPIC
    #: A labelled csv/jsonl/json/parquet file or ``save_to_disk`` folder (the labelled pool).
    train_file: str | None = None
    #: Labelled test file; without one (and without the built-in task) no test metrics are computed.
    test_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    #: Classes to remove from every split (by name).
    drop_labels: list[str] = field(default_factory=list)
    #: Training examples per class, seeded by ``seed`` (null or 0: every row not used for validation).
    k_per_class: int | None = None
    #: Validation examples per class, drawn from the pool before the training sample (0: none).
    validation_per_class: int = 16
    #: Fixed seed of the validation draw, independent of ``seed``.
    validation_seed: int = 1234
    max_length: int = 128
    cache_dir: str | None = None


@dataclass
class FinetuneConfig:
    #: ``auto``: next-token loss for causal models, masked LM for the others.
    aux_lm: Literal["none", "clm", "mlm", "auto"] = "none"
    #: λ in L = L_cls + λ·L_lm (GPT-1 uses 0.5); 0 is plain fine-tuning.
    aux_weight: float = 0.5
    mlm_probability: float = 0.15


@dataclass
class FinetuneTextConfig(TrainConfig):
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: Tokenizer folder; default: the one saved with ``model.name_or_path``.
    tokenizer_name_or_path: str | None = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


# ----------------------------------------------------------------------------------------- data


def load_splits(cfg: ClassificationDataConfig) -> tuple[dict, list[str], str]:
    """{"pool", "test"} datasets with ``text``/``label`` columns on shared class ids, the class names,
    and how to name the pool in messages."""
    if cfg.train_file:
        where = f"data.train_file {cfg.train_file}"
        pool = load_labeled_dataset(cfg.train_file, cfg.text_column, cfg.label_column)
        test = load_labeled_dataset(cfg.test_file, cfg.text_column, cfg.label_column) if cfg.test_file else None
        text_column, label_column = cfg.text_column, cfg.label_column
    elif cfg.source == BUILTIN_TOPIC:
        from nlp_ssl.data.wiki import build_wiki_corpus

        folder = build_wiki_corpus(cfg.cache_dir)
        where = "built-in wiki topic task"
        pool = load_labeled_dataset(folder, "text", "topic", split="en_train")
        test = load_labeled_dataset(folder, "text", "topic", split="en_test")
        text_column, label_column = "text", "topic"
        cfg.drop_labels = list(dict.fromkeys(["Uncategorized", *cfg.drop_labels]))
    else:
        raise ConfigError(f"data.source {cfg.source!r}: set data.train_file, or use {BUILTIN_TOPIC!r}")
    if cfg.drop_labels:
        pool = drop_classes(pool, label_column, cfg.drop_labels)
    names = list(pool.features[label_column].names)
    pool = _standard_columns(pool, text_column, label_column)
    if test is not None:
        test_names = test.features[label_column].names
        unknown = sorted(set(test_names) - set(names) - set(cfg.drop_labels))
        present = set(np.asarray(test[label_column][:]).tolist())
        unknown = [n for n in unknown if test_names.index(n) in present]
        if unknown:
            raise DataError(f"data.test_file {cfg.test_file}: label(s) {unknown} are not classes of {where} (classes: {names})")
        index = {n: i for i, n in enumerate(names)}
        codes = np.asarray([index.get(test_names[c], -1) for c in test[label_column][:]])
        keep = np.flatnonzero(codes >= 0)
        test = _standard_columns(test, text_column, label_column).select(keep)
        test = test.remove_columns("label").add_column("label", codes[keep].astype(np.int64))
    return {"pool": pool, "test": test}, names, where


def _standard_columns(ds, text_column: str, label_column: str):
    ds = ds.select_columns([text_column, label_column])
    mapping = {c: t for c, t in ((text_column, "text"), (label_column, "label")) if c != t}
    return ds.rename_columns(mapping) if mapping else ds


def split_pool(pool, names: list[str], cfg: ClassificationDataConfig, seed: int, where: str):
    """(train, validation): validation first (fixed seed), then k per class of what is left."""
    k, v = cfg.k_per_class or 0, cfg.validation_per_class
    if k < 0 or v < 0:
        raise ConfigError(f"data.k_per_class ({k}) and data.validation_per_class ({v}) must be >= 0")
    counts = np.bincount(np.asarray(pool["label"][:]), minlength=len(names))
    need = k + v if k else v + 1
    short = [f"{names[c]!r} has {int(n)}" for c, n in enumerate(counts) if n < need]
    if short:
        raise DataError(
            f"{where}: {len(short)} class(es) have fewer than the {need} labelled examples that "
            f"k_per_class={k or 'all'} + validation_per_class={v} need: {'; '.join(short)}"
        )
    if v:
        numbered = pool.add_column("_row", np.arange(len(pool)))
        validation = sample_k_per_class(numbered, "label", v, cfg.validation_seed)
        taken = np.zeros(len(pool), dtype=bool)
        taken[np.asarray(validation["_row"][:])] = True
        validation = validation.remove_columns("_row")
        rest = pool.select(np.flatnonzero(~taken))
    else:
        validation, rest = None, pool
    return sample_k_per_class(rest, "label", k or None, seed), validation


def tokenize(ds, tokenizer, max_length: int):
    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    out = ds.map(encode, batched=True, remove_columns=["text"], desc="tokenizing")
    keep = [c for c in ("input_ids", "token_type_ids", "label") if c in out.column_names]
    return out.select_columns(keep)


# ---------------------------------------------------------------------------------------- model


def load_tokenizer(cfg: FinetuneTextConfig):
    from transformers import AutoTokenizer

    source = cfg.tokenizer_name_or_path or cfg.model.name_or_path
    if not source:
        raise ConfigError("set model.name_or_path (a checkpoint folder) or tokenizer_name_or_path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ConfigError(f"no tokenizer at {source}: {error}") from None
    if tokenizer.pad_token is None:  # GPT-2: pad with EOS; the classifier pools the last non-pad token
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def resolve_aux(choice: str, config) -> str:
    if choice != "auto":
        return choice
    return "clm" if is_causal(config) else "mlm"


def build_task(cfg: FinetuneTextConfig, tokenizer, names: list[str]):
    fields = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
        "pad_token_id": tokenizer.pad_token_id,
    }
    if not cfg.model.name_or_path:
        fields.update(vocab_size=len(tokenizer), **special_token_fields(tokenizer))
    if cfg.model.name_or_path and not Path(cfg.model.name_or_path).joinpath("config.json").is_file() and Path(cfg.model.name_or_path).exists():
        raise ConfigError(f"model.name_or_path {cfg.model.name_or_path}: not a model folder (no config.json)")
    try:
        model = build_model(cfg.model, "sequence_classification", **fields)
    except OSError as error:  # not a local folder and not reachable on the Hub
        raise ConfigError(f"model.name_or_path {cfg.model.name_or_path}: cannot load it ({error})") from None
    model.config.problem_type = "single_label_classification"
    aux = resolve_aux(cfg.finetune.aux_lm, model.config)
    lm_head = None
    if aux != "none" and cfg.finetune.aux_weight > 0:
        # The checkpoint loaded with its LM head gives the head's pretrained weights (for a tied
        # GPT-2 head, just the embeddings that the classifier already has).
        lm_fields = {"pad_token_id": tokenizer.pad_token_id}
        if not cfg.model.name_or_path:
            lm_fields.update(vocab_size=len(tokenizer), **special_token_fields(tokenizer))
        lm_model = build_model(cfg.model, "masked_lm" if aux == "mlm" else "causal_lm", **lm_fields)
        lm_head = pretrained_lm_head(model, lm_model, aux)
    task = SequenceClassificationTask(model, aux_lm=aux, aux_weight=cfg.finetune.aux_weight, lm_head=lm_head)
    return task, aux


# ------------------------------------------------------------------------------------- evaluate


@torch.no_grad()
def predict(model, dataset, collator, batch_size: int, device) -> np.ndarray:
    """Predicted class ids for ``dataset`` (every process predicts all of it: test sets are small)."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        batch = collator([dict(zip(rows, values)) for values in zip(*rows.values())])
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        preds.append(logits.argmax(-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(preds)


def main(argv=None):
    cfg = parse_config(FinetuneTextConfig, argv, default_yaml=Path(__file__).parent / "configs" / "finetune_text.yaml")
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        splits, names, where = load_splits(cfg.data)
        train_raw, val_raw = split_pool(splits["pool"], names, cfg.data, cfg.seed, where)
        tokenizer = load_tokenizer(cfg)
        task, aux = build_task(cfg, tokenizer, names)
        limit = max_positions(task.model.config)
        max_length = min(cfg.data.max_length, limit) if limit else cfg.data.max_length
        train = tokenize(train_raw, tokenizer, max_length)
        validation = tokenize(val_raw, tokenizer, max_length) if val_raw is not None else None
        test = tokenize(splits["test"], tokenizer, max_length) if splits["test"] is not None else None
    if len(train) < cfg.micro_batch_size:
        raise ConfigError(
            f"{len(train)} training examples ({cfg.data.k_per_class or 'all'} per class × {len(names)} classes) "
            f"are fewer than micro_batch_size {cfg.micro_batch_size}; lower it"
        )
    collator = ClassificationCollator(tokenizer, aux, cfg.finetune.mlm_probability, seed=cfg.seed)
    base = cfg.model.name_or_path if cfg.model.load_weights else f"{cfg.model.name_or_path or cfg.model.arch} architecture, fresh weights"
    description = RunDescription(
        objective=f"text classification ({len(names)} classes)"
        + (f" + auxiliary {aux.upper()} loss (λ={cfg.finetune.aux_weight})" if task.aux_lm != "none" else ""),
        data=f"{where}, {cfg.data.k_per_class or 'all'} labelled examples per class ({len(train)} in all)",
        base_model=base or "trained from scratch",
        pipeline_tag="text-classification",
    )
    test_collator = ClassificationCollator(tokenizer, "none")

    def score_test(model) -> dict:
        """Test accuracy and macro-F1 through the local evaluate metrics (of the last and the best model)."""
        preds = predict(model, test, test_collator, cfg.eval_batch_size or cfg.micro_batch_size, accelerator.device)
        scores = compute_classification_metrics(preds, np.asarray(test["label"][:]))
        return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"]}

    trainer = Trainer(
        cfg, task, train, collator, eval_dataset=validation, processor=tokenizer,
        accelerator=accelerator, description=description, run_config=cfg,
    )
    extra = {"train_examples": len(train), "num_labels": len(names), "aux_lm": task.aux_lm}
    if test is not None:
        extra["test_examples"] = len(test)
    results = trainer.fit(extra_results=extra, score_model=score_test if test is not None else None)
    if accelerator.is_main_process:
        shown = ("steps", "best_step", "eval_accuracy", "test_accuracy", "test_macro_f1", "last_test_accuracy")
        print(json.dumps({k: results[k] for k in shown if k in results}))
    return results


if __name__ == "__main__":
    run(main)
