"""Text fine-tuning as a library: classification or regression of single texts or sentence pairs.

``recipes/finetune_text.py`` is a thin command line over :func:`finetune`, and ``recipes/glue.py``
calls the same function once per GLUE task (recipes never import each other). The labelled pool is
split into a validation set (``data.validation_per_class`` rows per class, drawn with a fixed seed
so every run selects its best checkpoint on the same rows) and the training rows (``k_per_class``
per class, or ``max_train_samples``, seeded by ``seed``); test sets are scored only at the end,
through the local evaluate metrics, for the best and the last model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nlp_ssl.config import check_ranges
from nlp_ssl.data.labels import drop_classes, few_label_split, load_labeled_dataset
from nlp_ssl.data.text import check_one_corpus
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.metrics import SCORES, compute_scores
from nlp_ssl.metrics.prediction import predict
from nlp_ssl.models import ModelConfig, build_model, special_token_fields
from nlp_ssl.models.architectures import is_causal
from nlp_ssl.models.builders import loads_checkpoint, max_positions, resolve_model_path
from nlp_ssl.models.continued import check_vocabulary
from nlp_ssl.objectives import registry
from nlp_ssl.objectives.text_classification import ClassificationCollator
from nlp_ssl.tasks.classification import SequenceClassificationTask
from nlp_ssl.text.contrastive_finetuning import ContrastiveFinetuneConfig, contrastive_parts, describe
from nlp_ssl.text.pairs import prepare_pair_layout, tokenize_texts
from nlp_ssl.text.tokenizers import load_tokenizer_from
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator
from nlp_ssl.training.reporting import RunDescription

logger = logging.getLogger("nlp_ssl.text.text_finetuning")

BUILTIN_TOPIC = "builtin:wiki_topic"


@dataclass
class ClassificationDataConfig:
    """The labelled texts (or pairs): where they come from, k per class, and the held-out rows."""

    #: ``builtin:wiki_topic``: the built-in corpus's ``topic`` labels, 11 classes ("Uncategorized"
    #: dropped), pool = en_train, test = en_test. Left at its default when ``train_file`` is set.
    source: str = BUILTIN_TOPIC
    #: A labelled csv/jsonl/json/parquet file or ``save_to_disk`` folder (the labelled pool).
    train_file: str | None = None
    #: Labelled test file; without one (and without the built-in task) no test metrics are computed.
    test_file: str | None = None
    text_column: str = "text"
    #: Second text column for sentence-pair tasks (entailment, paraphrase); null: single texts.
    text_pair_column: str | None = None
    label_column: str = "label"
    #: Classes to remove from every split (by name).
    drop_labels: list[str] = field(default_factory=list)
    #: Training examples per class, seeded by ``seed`` (null or 0: every row not used for validation).
    k_per_class: int | None = None
    #: At most this many training rows, a seeded random subset (null: no limit).
    max_train_samples: int | None = None
    #: Validation examples per class, drawn from the pool before the training sample (0: none);
    #: for regression, the number of validation rows.
    validation_per_class: int = 16
    #: Fixed seed of the validation draw, independent of ``seed``.
    validation_seed: int = 1234
    max_length: int = 128
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, max_length="(0, inf)")
        check_one_corpus(self.train_file, "data.source", self.source, BUILTIN_TOPIC)


@dataclass
class FinetuneConfig:
    """How the classifier learns: the problem type, the mode and the auxiliary loss."""

    #: The objective whose loss is the auxiliary one (``mlm``, ``clm``: any text objective that lends
    #: one), ``none``, or ``auto``: next-token loss for causal models, masked LM for the others.
    aux_lm: str = "none"
    #: λ in L = L_cls + λ·L_lm (GPT-1 uses 0.5); 0 is plain fine-tuning.
    aux_weight: float = 0.5
    #: ``regression``: float labels, one output, MSE loss (STS-B).
    problem_type: Literal["single_label_classification", "regression"] = "single_label_classification"
    #: Test-set scores (``accuracy``, ``f1``, ``macro_f1``, ``matthews_correlation``, ``pearsonr``,
    #: ``spearmanr``); empty: accuracy and macro-F1, or Pearson and Spearman for regression.
    metrics: list[str] = field(default_factory=list)
    #: ``contrastive``: + a contrastive loss that pulls examples of one class together (``contrastive``).
    mode: Literal["standard", "contrastive"] = "standard"
    contrastive: ContrastiveFinetuneConfig = field(default_factory=ContrastiveFinetuneConfig)

    def __post_init__(self):
        choices = ["none", "auto", *registry.names("text", aux=True)]
        if self.aux_lm not in choices:
            raise ConfigError(f"aux_lm {self.aux_lm!r} is not one of {choices}")


@dataclass
class _FinetuneText(TrainConfig):
    MOVED_KEYS = {"finetune.mlm_probability": "mlm.mlm_probability"}
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: Tokenizer folder; default: the one saved with ``model.name_or_path``.
    tokenizer_name_or_path: str | None = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


#: + a settings section per text objective: the auxiliary loss's (``mlm.mlm_probability`` masks its copies).
FinetuneTextConfig = registry.with_objective_settings(_FinetuneText, "text")


def is_regression(cfg: FinetuneTextConfig) -> bool:
    return cfg.finetune.problem_type == "regression"


def score_names(cfg: FinetuneTextConfig) -> list[str]:
    names = list(cfg.finetune.metrics) or (["pearsonr", "spearmanr"] if is_regression(cfg) else ["accuracy", "macro_f1"])
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise ConfigError(f"finetune.metrics: unknown {unknown}; choose from {', '.join(SCORES)}")
    wrong = [n for n in names if SCORES[n][2] != is_regression(cfg)]
    if wrong:
        raise ConfigError(f"finetune.metrics {wrong} do not score finetune.problem_type={cfg.finetune.problem_type}")
    return names


# ----------------------------------------------------------------------------------------- data


def load_splits(cfg: ClassificationDataConfig, regression: bool = False) -> tuple[dict, list[str] | None, str]:
    """{"pool", "test"} datasets with ``text`` (``text_pair``) / ``label`` columns, the class names
    (None for regression), and how to name the pool in messages. Class ids are shared by the splits."""
    if cfg.train_file:
        where = f"data.train_file {cfg.train_file}"
        read = dict(text_column=cfg.text_column, label_column=cfg.label_column,
                    text_pair_column=cfg.text_pair_column, regression=regression)
        pool = load_labeled_dataset(cfg.train_file, **read)
        test = load_labeled_dataset(cfg.test_file, **read) if cfg.test_file else None
        columns = (cfg.text_column, cfg.text_pair_column, cfg.label_column)
    elif cfg.source == BUILTIN_TOPIC:
        if regression or cfg.text_pair_column:
            raise ConfigError(f"data.source {BUILTIN_TOPIC}: single-text classification only; set data.train_file")
        from nlp_ssl.data.wiki import build_wiki_corpus

        folder = build_wiki_corpus(cfg.cache_dir)
        where = "built-in wiki topic task"
        pool = load_labeled_dataset(folder, "text", "topic", split="en_train")
        test = load_labeled_dataset(folder, "text", "topic", split="en_test")
        columns = ("text", None, "topic")
        cfg.drop_labels = list(dict.fromkeys(["Uncategorized", *cfg.drop_labels]))
    else:
        raise ConfigError(f"data.source {cfg.source!r}: set data.train_file, or use {BUILTIN_TOPIC!r}")
    if regression:
        if cfg.drop_labels:
            raise ConfigError("data.drop_labels: a regression task has no classes to drop")
        return {"pool": standard_columns(pool, *columns), "test": test and standard_columns(test, *columns)}, None, where
    label_column = columns[2]
    if cfg.drop_labels:
        pool = drop_classes(pool, label_column, cfg.drop_labels)
    names = list(pool.features[label_column].names)
    if test is not None:
        test = align_classes(test, label_column, names, cfg.drop_labels, f"data.test_file {cfg.test_file}", where)
    pool = standard_columns(pool, *columns)
    return {"pool": pool, "test": test and standard_columns(test, *columns)}, names, where


def align_classes(test, label_column: str, names: list[str], dropped: list[str], test_where: str, where: str):
    """``test`` with its class ids renumbered to ``names`` (the pool's), rows of dropped classes removed."""
    test_names = test.features[label_column].names
    present = set(np.asarray(test[label_column][:]).tolist())
    unknown = [n for n in sorted(set(test_names) - set(names) - set(dropped)) if test_names.index(n) in present]
    if unknown:
        raise DataError(f"{test_where}: label(s) {unknown} are not classes of {where} (classes: {names})")
    index = {n: i for i, n in enumerate(names)}
    codes = np.asarray([index.get(test_names[c], -1) for c in test[label_column][:]])
    keep = np.flatnonzero(codes >= 0)
    test = test.select(keep).remove_columns(label_column)
    return test.add_column(label_column, codes[keep].astype(np.int64))


def standard_columns(ds, text_column: str, pair_column: str | None, label_column: str):
    """Only ``text`` (``text_pair``) and ``label``, under those names."""
    wanted = [(text_column, "text"), (pair_column, "text_pair"), (label_column, "label")]
    wanted = [(c, t) for c, t in wanted if c is not None]
    ds = ds.select_columns([c for c, _ in wanted])
    mapping = {c: t for c, t in wanted if c != t}
    return ds.rename_columns(mapping) if mapping else ds


def split_pool(pool, names: list[str] | None, cfg: ClassificationDataConfig, seed: int, where: str):
    """(train, validation): validation first (fixed seed), then k per class (or max_train_samples) of the rest."""
    k, v = cfg.k_per_class or 0, cfg.validation_per_class
    if k < 0 or v < 0:
        raise ConfigError(f"data.k_per_class ({k}) and data.validation_per_class ({v}) must be >= 0")
    if names is None:
        train, validation = _split_regression(pool, cfg, where)
    else:
        train, validation = few_label_split(pool, k, v, seed, cfg.validation_seed, where)
    n = cfg.max_train_samples
    if n is not None:
        if n < 1:
            raise ConfigError(f"data.max_train_samples must be >= 1, got {n}")
        if n < len(train):
            rows = np.random.default_rng([int(seed) & 0xFFFF_FFFF, 0x5A4D]).permutation(len(train))[:n]
            train = train.select(np.sort(rows))
    return train, validation


def _split_regression(pool, cfg, where):
    if cfg.k_per_class:
        raise ConfigError("data.k_per_class: a regression task has no classes; use data.max_train_samples")
    v = cfg.validation_per_class
    if v >= len(pool):
        raise DataError(f"{where}: {len(pool)} rows leave none to train on after validation_per_class={v}")
    order = np.random.default_rng(cfg.validation_seed).permutation(len(pool))
    validation = pool.select(np.sort(order[:v])) if v else None
    return pool.select(np.sort(order[v:])), validation


def tokenize(ds, tokenizer, max_length: int, keep_token_types: bool = True):
    """Token ids (and segment ids where the model has them) of ``text`` or the ``text``/``text_pair`` pair."""
    pairs = "text_pair" in ds.column_names

    def encode(batch):
        return tokenize_texts(tokenizer, batch["text"], batch["text_pair"] if pairs else None, max_length)

    out = ds.map(encode, batched=True, remove_columns=[c for c in ("text", "text_pair") if c in ds.column_names],
                 desc="tokenizing")
    keep = [c for c in ("input_ids", "token_type_ids", "label") if c in out.column_names]
    if not keep_token_types and "token_type_ids" in keep:
        keep.remove("token_type_ids")
    return out.select_columns(keep)


# ---------------------------------------------------------------------------------------- model


def load_tokenizer(cfg: FinetuneTextConfig):
    source = cfg.tokenizer_name_or_path or (cfg.model.name_or_path and resolve_model_path(cfg.model.name_or_path))
    if not source:
        raise ConfigError("set model.name_or_path (a checkpoint folder) or tokenizer_name_or_path")
    tokenizer = load_tokenizer_from(source, "tokenizer_name_or_path" if cfg.tokenizer_name_or_path else "model.name_or_path")
    if tokenizer.pad_token is None:  # GPT-2: pad with EOS; the classifier pools the last non-pad token
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def check_room_for_text(tokenizer, max_length: int, pairs: bool) -> None:
    """A length that the special tokens fill would train on inputs with no text in them."""
    specials = tokenizer.num_special_tokens_to_add(pair=pairs)
    if max_length <= specials + pairs:
        raise ConfigError(f"data.max_length {max_length} leaves no room for text: the tokenizer adds {specials} special "
                          f"tokens to each {'pair' if pairs else 'text'}")


def build_task(cfg: FinetuneTextConfig, tokenizer, names: list[str] | None):
    """(task, the objective whose auxiliary loss runs, or None). ``names`` None: a one-output regression head."""
    if names is None:
        fields = {"num_labels": 1, "id2label": {0: "score"}, "label2id": {"score": 0}}
    else:
        fields = {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    fields["pad_token_id"] = tokenizer.pad_token_id
    if not cfg.model.name_or_path:
        fields.update(vocab_size=len(tokenizer), **special_token_fields(tokenizer))
    path = cfg.model.name_or_path and resolve_model_path(cfg.model.name_or_path)
    if path and Path(path).exists() and not Path(path).joinpath("config.json").is_file():
        raise ConfigError(f"model.name_or_path {path}: not a model folder (no config.json)")
    try:
        model = build_model(cfg.model, "sequence_classification", **fields)
    except OSError as error:  # not a local folder and not reachable on the Hub
        raise ConfigError(f"model.name_or_path {path}: cannot load it ({error})") from None
    if path and loads_checkpoint(cfg.model):  # its embeddings are indexed by the tokenizer's ids
        check_vocabulary(tokenizer, model, path, key="tokenizer_name_or_path")
    model.config.problem_type = cfg.finetune.problem_type
    added = prepare_pair_layout(tokenizer, model.config)
    if added:  # GPT-1's start/delimiter/extract tokens get embeddings of their own
        model.resize_token_embeddings(len(tokenizer))
    causal = is_causal(model.config)
    aux = registry.auxiliary_objective(cfg.finetune.aux_lm, "text", causal=causal) if cfg.finetune.aux_weight > 0 else None
    aux_loss = None
    if aux is not None:
        # The checkpoint loaded with the objective's head gives the head's pretrained weights (for a
        # tied GPT-2 head, just the embeddings that the classifier already has).
        lm_fields = {"pad_token_id": tokenizer.pad_token_id}
        if not cfg.model.name_or_path:
            lm_fields.update(vocab_size=len(tokenizer), **special_token_fields(tokenizer))
        lm_model = build_model(cfg.model, aux.head, **lm_fields)
        if added:
            lm_model.resize_token_embeddings(len(tokenizer))
        aux_loss = aux.aux.loss(model, lm_model)
    task = SequenceClassificationTask(model, aux_loss, aux_weight=cfg.finetune.aux_weight, regression=names is None)
    return task, aux


def uses_token_types(config) -> bool:
    """BERT-style models embed segment ids; ModernBERT, GPT-2 and XLM pairs rely on separators only."""
    return int(getattr(config, "type_vocab_size", 0) or 0) >= 2


# ------------------------------------------------------------------------------------- evaluate


def test_prefix(split: str) -> str:
    """``test`` -> ``test_``; ``test_mismatched`` -> ``test_mismatched_`` (MNLI's second dev set)."""
    return f"{split}_"


# ------------------------------------------------------------------------------------------ run


def finetune(cfg: FinetuneTextConfig, data: tuple[dict, list[str] | None, str] | None = None,
             description: RunDescription | None = None) -> dict:
    """Fine-tune, score every ``test*`` split, save the model and its card; return all_results.

    ``data``: ``load_splits``'s answer, for a caller (the GLUE harness) that reads its own data;
    ``description`` adds what that caller knows (dataset ids, the eval results' names) to the card.
    """
    regression = is_regression(cfg)
    scores = score_names(cfg)
    if regression and cfg.eval.metric_for_best == "accuracy":
        cfg.eval.metric_for_best = "loss"  # the validation MSE: regression reports no accuracy
    accelerator = make_accelerator(cfg)
    with accelerator.main_process_first():
        splits, names, where = data if data is not None else load_splits(cfg.data, regression)
        train_raw, val_raw = split_pool(splits["pool"], names, cfg.data, cfg.seed, where)
        tokenizer = load_tokenizer(cfg)
        task, aux = build_task(cfg, tokenizer, names)
        config = task.model.config
        limit = max_positions(config)
        max_length = min(cfg.data.max_length, limit) if limit else cfg.data.max_length
        check_room_for_text(tokenizer, max_length, pairs=cfg.data.text_pair_column is not None)
        types = uses_token_types(config)
        if not types and "token_type_ids" in tokenizer.model_input_names:
            # Saved with the model, so pipeline() does not hand segment ids to a model without them.
            tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
        train = tokenize(train_raw, tokenizer, max_length, types)
        validation = tokenize(val_raw, tokenizer, max_length, types) if val_raw is not None else None
        tests = {k: tokenize(v, tokenizer, max_length, types)
                 for k, v in splits.items() if k.startswith("test") and v is not None}
    if len(train) < cfg.impl.micro_batch_size:
        raise ConfigError(
            f"{len(train)} training examples are fewer than micro_batch_size {cfg.impl.micro_batch_size}; lower it"
        )
    aux_keys = aux.aux.batch_keys(registry.objective_settings(cfg, aux), tokenizer=tokenizer, seed=cfg.seed) if aux else None
    collator = ClassificationCollator(tokenizer, aux_keys, regression=regression)
    eval_collator = None
    if cfg.finetune.mode == "contrastive":
        task, collator, eval_collator = contrastive_parts(cfg.finetune.contrastive, task, collator, train, validation, cfg.seed)
    test_collator = ClassificationCollator(tokenizer, regression=regression)
    description = description or RunDescription()
    kind = "regression" if regression else f"text classification ({len(names)} classes)"
    pairs = " of sentence pairs" if "text_pair" in train_raw.column_names else ""
    description.objective = description.objective or (
        kind + pairs + (f" + auxiliary {aux.name.upper()} loss (λ={cfg.finetune.aux_weight})" if aux else "")
        + (describe(cfg.finetune.contrastive) if cfg.finetune.mode == "contrastive" else "")
    )
    per_class = f"{cfg.data.k_per_class or 'all'} labelled examples per class, " if not regression else ""
    description.data = description.data or f"{where}, {per_class}{len(train)} training examples"
    path = cfg.model.name_or_path and resolve_model_path(cfg.model.name_or_path)
    description.base_model = (
        path if (path and cfg.model.load_weights) else f"{path or cfg.model.arch} architecture, fresh weights"
    )
    if path and cfg.model.load_weights and not Path(path).exists():
        description.base_model_id = description.base_model_id or path  # a Hub id: the card links it
    description.pipeline_tag = "text-classification"
    description.eval_metrics = description.eval_metrics or {f"test_{n}": n for n in scores}

    def score_tests(model) -> dict:
        out = {}
        for split, ds in tests.items():
            preds = predict(model, ds, test_collator, cfg.eval.batch_size or cfg.impl.micro_batch_size, accelerator.device)
            found = compute_scores(scores, preds, np.asarray(ds["label"][:]))
            out.update({test_prefix(split) + k: v for k, v in found.items()})
        return out

    trainer = Trainer(cfg, task, train, collator, eval_dataset=validation, eval_collator=eval_collator, processor=tokenizer,
                      accelerator=accelerator, description=description, run_config=cfg)
    extra = {"train_examples": len(train), "num_labels": 1 if regression else len(names), "aux_lm": aux.name if aux else "none",
             "problem_type": cfg.finetune.problem_type}
    extra.update({f"{k}_examples": len(v) for k, v in tests.items()})
    return trainer.fit(extra_results=extra, score_model=score_tests if tests else None)
