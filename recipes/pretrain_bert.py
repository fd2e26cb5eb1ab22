"""Pretrain BERT as BERT did: masked language modelling plus next sentence (or, with sop, sentence order) prediction.

    accelerate launch recipes/pretrain_bert.py [--config recipes/configs/pretrain_bert.yaml] [key=value ...]

NSP pairs are built from whole documents, so the documents are split into train and validation
first: no sentence of a validation document is ever a training A or B.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nlp_ssl.cli import run
from nlp_ssl.config import check_ranges, parse_config
from nlp_ssl.data.documents import load_kjv_chapters, load_python_docs
from nlp_ssl.data.text import TextDataConfig, load_text_splits
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model, check_block_size
from nlp_ssl.objectives import NSPCollator, build_nsp_dataset
from nlp_ssl.reporting import RunDescription
from nlp_ssl.tasks.bert_pretraining import BertPretrainingTask
from nlp_ssl.tokenizer_setup import TokenizerConfig, load_or_train_tokenizer
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator

SENTENCE_CORPORA = {"kjv": load_kjv_chapters, "python_docs": load_python_docs}


@dataclass
class BertDataConfig:
    #: ``wiki`` (built-in Wikipedia leads, a text per document), ``kjv`` (Bible chapters of verses)
    #: or ``python_docs`` (pages of the Python documentation). Ignored when ``train_file`` is set.
    documents: Literal["wiki", "kjv", "python_docs"] = "wiki"
    #: A local file with one document per row (a text, or a list of sentences in jsonl).
    train_file: str | None = None
    #: Column of the documents (default: ``text`` for wiki and files, ``sentences`` for kjv and python_docs).
    column: str | None = None
    #: Fraction of the documents held out for validation.
    validation_split: float = 0.05
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    #: Passes over the corpus, each with other A/B splits, random Bs and (in the collator) masks.
    dupe_factor: int = 5
    max_train_documents: int | None = None
    num_proc: int | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, validation_split="(0, 1)", max_seq_length="(0, inf)", short_seq_prob="[0, 1]", dupe_factor="(0, inf)", max_train_documents="(0, inf)", num_proc="(0, inf)")


@dataclass
class BertObjectiveConfig:
    #: ALBERT's sentence order prediction instead of next sentence prediction.
    sop: bool = False
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        check_ranges(self, mlm_probability="(0, 1)", pad_to_multiple_of="(0, inf)")


@dataclass
class PretrainBertConfig(TrainConfig):
    data: BertDataConfig = field(default_factory=BertDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bert: BertObjectiveConfig = field(default_factory=BertObjectiveConfig)


def load_documents(cfg: BertDataConfig, seed: int):
    """Train and validation documents, and their column."""
    if cfg.train_file or cfg.documents == "wiki":
        column = cfg.column or "text"
        text_cfg = TextDataConfig(
            train_file=cfg.train_file, text_column=column, validation_split=cfg.validation_split,
            max_train_documents=cfg.max_train_documents, cache_dir=cfg.cache_dir,
        )
        return load_text_splits(text_cfg, seed=seed), column
    column = cfg.column or "sentences"
    if not 0 < cfg.validation_split < 1:
        raise ConfigError(f"data.validation_split must be in (0, 1), got {cfg.validation_split}")
    corpus = SENTENCE_CORPORA[cfg.documents](cfg.cache_dir)
    if column not in corpus.column_names:
        raise ConfigError(f"data.column {column!r}: data.documents={cfg.documents} has columns {corpus.column_names}")
    parts = corpus.train_test_split(test_size=cfg.validation_split, seed=seed)
    splits = {"train": parts["train"], "validation": parts["test"]}
    if cfg.max_train_documents:
        splits["train"] = splits["train"].select(range(min(cfg.max_train_documents, len(splits["train"]))))
    return splits, column


def joined_text(row: dict, column: str) -> dict:
    """A document as one text, for training the tokenizer on lists of sentences."""
    value = row[column]
    if isinstance(value, list):
        value = " ".join(s for s in value if isinstance(s, str))
    return {"tokenizer_text": value if isinstance(value, str) else ""}  # bad rows are named by build_nsp_dataset


def main(argv=None):
    cfg = parse_config(PretrainBertConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_bert.yaml")
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        documents, column = load_documents(cfg.data, cfg.seed)
        texts = documents["train"].map(joined_text, fn_kwargs={"column": column}, remove_columns=documents["train"].column_names)
        tokenizer = load_or_train_tokenizer(cfg.tokenizer, texts, "tokenizer_text", cfg.data.cache_dir)
        model = build_model(cfg.model, "pretraining", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, type_vocab_size=2)
        check_block_size(cfg.data.max_seq_length, model.config)
        pairs = {
            split: build_nsp_dataset(
                docs, tokenizer, column, max_seq_length=cfg.data.max_seq_length, short_seq_prob=cfg.data.short_seq_prob,
                dupe_factor=cfg.data.dupe_factor if split == "train" else 1, seed=cfg.seed + (split != "train"),
                sop=cfg.bert.sop, num_proc=cfg.data.num_proc, cache_dir=cfg.data.cache_dir,
            )
            for split, docs in documents.items()
        }
        collator = NSPCollator(tokenizer, mlm_probability=cfg.bert.mlm_probability, pad_to_multiple_of=cfg.bert.pad_to_multiple_of, seed=cfg.seed)

    description = RunDescription(
        objective=f"masked language modelling ({cfg.bert.mlm_probability:.0%}) + "
        + ("sentence order prediction" if cfg.bert.sop else "next sentence prediction"),
        data=cfg.data.train_file or cfg.data.documents,
        pipeline_tag="fill-mask",
    )
    trainer = Trainer(
        cfg, BertPretrainingTask(model), pairs["train"], collator,
        eval_dataset=pairs["validation"], processor=tokenizer, accelerator=accelerator,
        description=description, run_config=cfg,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        keys = ("steps", "eval_loss", "eval_mlm_loss", "eval_nsp_loss", "eval_mlm_accuracy", "eval_nsp_accuracy")
        print({k: results[k] for k in keys if k in results})
    return results


if __name__ == "__main__":
    run(main)
