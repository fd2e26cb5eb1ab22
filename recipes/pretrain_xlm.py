"""Pretrain a cross-lingual XLM: MLM on monolingual streams alternating with TLM on translation pairs.

    accelerate launch recipes/pretrain_xlm.py [--config recipes/configs/pretrain_xlm.yaml] [key=value ...]

As in XLM, every optimizer step trains on one stream (one language for MLM, one language pair for
TLM) and the streams take turns: ``xlm.schedule: "mlm:1,tlm:1"`` alternates one MLM step with one
TLM step, the MLM steps rotating over the languages (en, tlm, fr, tlm, es, tlm, ...). With
``xlm.objective=clm`` it trains XLM's causal LM on the monolingual streams instead.
Translation pairs are held out for validation by whole books, so no verse of a validation book
(nor its translation) is trained on.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from datasets import Dataset, concatenate_datasets, load_dataset
from torch.utils.data import ConcatDataset, Subset

from nlp_ssl.cli import run
from nlp_ssl.config import check_ranges, parse_config
from nlp_ssl.data.mixing import AlternatingBatchSampler, interleaved_indices, parse_ratio, round_robin_schedule
from nlp_ssl.data.parallel import load_monolingual_corpus, load_sword_pairs
from nlp_ssl.data.text import check_text_file
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model, check_block_size
from nlp_ssl.models.builders import SIZE_PRESETS
from nlp_ssl.objectives import TLMCollator, prepare_monolingual_dataset, prepare_tlm_dataset
from nlp_ssl.reporting import RunDescription
from nlp_ssl.tasks.causal_lm import CausalLMTask
from nlp_ssl.tasks.xlm import XLMMaskedLMTask
from nlp_ssl.tokenizer_setup import TokenizerConfig, load_or_train_tokenizer
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator


@dataclass
class XLMDataConfig:
    #: Languages of the monolingual streams (built-in Wikipedia leads: en, fr, es).
    languages: list[str] = field(default_factory=lambda: ["en", "fr", "es"])
    #: Translation directions ``src-tgt`` for TLM (built-in pairs: en-es Bible verses).
    pairs: list[str] = field(default_factory=lambda: ["en-es", "es-en"])
    #: A local jsonl of ``{"translation": {lang: text, ...}}`` rows instead of the built-in pairs.
    pairs_file: str | None = None
    max_length: int = 128
    #: Held out for validation: this fraction of the documents of each language, and of the
    #: Bible's books (whole books) or of the rows of ``pairs_file``.
    validation_split: float = 0.05
    #: Cap on the training documents per language and on the training pairs (small runs).
    max_documents: int | None = None
    num_proc: int | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, max_length="(0, inf)", validation_split="(0, 1)", max_documents="(0, inf)", num_proc="(0, inf)")


@dataclass
class XLMObjectiveConfig:
    objective: Literal["mlm", "clm"] = "mlm"
    #: Optimizer steps per round: ``mlm`` (or ``clm``) steps rotate over the languages, ``tlm`` steps
    #: over the pairs. Default: ``mlm:1,tlm:1``, or ``clm:1`` for the causal objective.
    schedule: str | None = None
    mlm_probability: float = 0.15

    def __post_init__(self):
        check_ranges(self, mlm_probability="(0, 1)")


@dataclass
class PretrainXLMConfig(TrainConfig):
    data: XLMDataConfig = field(default_factory=XLMDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="bpe"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="xlm"))
    xlm: XLMObjectiveConfig = field(default_factory=XLMObjectiveConfig)


def parse_pair(text: str) -> tuple[str, str]:
    src, sep, tgt = text.partition("-")
    if not sep or not src or not tgt or src == tgt:
        raise ConfigError(f"data.pairs: {text!r} is not a translation direction like 'en-es'")
    return src, tgt


def held_out(ds: Dataset, fraction: float, seed: int, max_train: int | None = None, group_column: str | None = None) -> dict[str, Dataset]:
    """Train/validation split of rows, or of whole groups (books: the ``ref`` before ``chapter:verse``);
    at most ``max_train`` training rows."""
    if not 0 < fraction < 1:
        raise ConfigError(f"data.validation_split must be in (0, 1), got {fraction}")
    if group_column is None or group_column not in ds.column_names:
        parts = ds.train_test_split(test_size=fraction, seed=seed)
        return {"train": capped(parts["train"], max_train), "validation": parts["test"]}
    groups = [ref.rsplit(" ", 1)[0] for ref in ds[group_column]]
    names = sorted(set(groups))
    order = Dataset.from_dict({"name": names}).shuffle(seed=seed)["name"]
    sizes = {name: groups.count(name) for name in names}
    held, total = set(), 0
    for name in order:
        if total >= fraction * len(groups):
            break
        held.add(name)
        total += sizes[name]
    rows = {"train": [i for i, g in enumerate(groups) if g not in held], "validation": [i for i, g in enumerate(groups) if g in held]}
    return {"train": capped(ds.select(rows["train"]), max_train), "validation": ds.select(rows["validation"])}


def load_pairs(cfg: XLMDataConfig, seed: int) -> dict[str, Dataset]:
    if cfg.pairs_file:
        path = check_text_file(cfg.pairs_file, "data.pairs_file")
        pairs = load_dataset("json", data_files=str(path), split="train", cache_dir=cfg.cache_dir)
    else:
        pairs = load_sword_pairs(cfg.cache_dir)
    return held_out(pairs, cfg.validation_split, seed, cfg.max_documents, group_column="ref")


def capped(ds: Dataset, n: int | None) -> Dataset:
    return ds.select(range(min(n, len(ds)))) if n else ds


def pair_text(row: dict) -> dict:
    """Both sides of a pair as one text, for training the tokenizer."""
    return {"text": "\n".join(t for t in row["translation"].values() if isinstance(t, str))}


def main(argv=None):
    cfg = parse_config(PretrainXLMConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_xlm.yaml")
    accelerator = make_accelerator(cfg)
    clm = cfg.xlm.objective == "clm"
    schedule_text = cfg.xlm.schedule or ("clm:1" if clm else "mlm:1,tlm:1")
    ratio = parse_ratio(schedule_text, "xlm.schedule")
    directions = [parse_pair(p) for p in cfg.data.pairs] if ratio.get("tlm") else []
    if clm and directions:
        raise ConfigError("xlm.schedule: TLM steps need xlm.objective=mlm; the causal objective uses the monolingual streams")
    members = {"mlm": cfg.data.languages, "clm": cfg.data.languages, "tlm": [f"{s}-{t}" for s, t in directions]}
    step_streams = round_robin_schedule(ratio, members)  # e.g. en, en-es, fr, es-en, es, en-es, ...
    languages = list(dict.fromkeys([*cfg.data.languages, *(lang for d in directions for lang in d)]))
    lang2id = {lang: i for i, lang in enumerate(languages)}

    with accelerator.main_process_first():
        mono = {
            lang: held_out(load_monolingual_corpus(lang, cfg.data.cache_dir), cfg.data.validation_split, cfg.seed, cfg.data.max_documents)
            for lang in cfg.data.languages
        }
        pairs = load_pairs(cfg.data, cfg.seed) if directions else None
        texts = [mono[lang]["train"].select_columns(["text"]) for lang in mono]
        if pairs is not None:
            texts.append(pairs["train"].map(pair_text, remove_columns=pairs["train"].column_names))
        tokenizer = load_or_train_tokenizer(cfg.tokenizer, concatenate_datasets(texts), "text", cfg.data.cache_dir)
        fields = dict(
            vocab_size=len(tokenizer), n_langs=len(lang2id), use_lang_emb=True, lang2id=lang2id, id2lang={i: l for l, i in lang2id.items()},
            pad_index=tokenizer.pad_token_id, eos_index=tokenizer.eos_token_id, bos_index=tokenizer.bos_token_id,
            unk_index=tokenizer.unk_token_id, mask_index=tokenizer.mask_token_id, mask_token_id=tokenizer.mask_token_id,
            causal=clm, asm=False,
        )
        if not cfg.model.name_or_path and cfg.model.size in SIZE_PRESETS:
            fields["embed_init_std"] = SIZE_PRESETS[cfg.model.size][1] ** -0.5
        model = build_model(cfg.model, "causal_lm" if clm else "masked_lm", **fields)
        check_block_size(cfg.data.max_length, model.config)
        # One stream per language and per translation direction, in the order the schedule names them.
        streams = {split: {} for split in ("train", "validation")}
        for lang, splits in mono.items():
            for split, ds in splits.items():
                streams[split][lang] = prepare_monolingual_dataset(ds, tokenizer, lang, max_length=cfg.data.max_length, num_proc=cfg.data.num_proc)
        for src, tgt in directions:
            for split, ds in pairs.items():
                streams[split][f"{src}-{tgt}"] = prepare_tlm_dataset(ds, tokenizer, src, tgt, max_length=cfg.data.max_length, num_proc=cfg.data.num_proc)
        collator = TLMCollator(tokenizer, lang2id, mlm_probability=cfg.xlm.mlm_probability, max_length=cfg.data.max_length, seed=cfg.seed, causal=clm)

    names = list(streams["train"])
    sampler = AlternatingBatchSampler(
        [len(streams["train"][n]) for n in names], [names.index(n) for n in step_streams], cfg.micro_batch_size,
        batches_per_step=max(cfg.global_batch_size // cfg.micro_batch_size, 1), seed=cfg.seed,
        names=[f"{'tlm' if '-' in n else cfg.xlm.objective} stream {n}" for n in names],
    )
    description = RunDescription(
        objective=("causal language modelling" if clm else "masked + translation language modelling")
        + f" (XLM), steps alternating {schedule_text} over {', '.join(names)}",
        data=f"Wikipedia leads ({', '.join(cfg.data.languages)})" + (f"; {cfg.data.pairs_file or 'KJV / Reina-Valera 1909 verse pairs'}" if directions else ""),
        pipeline_tag="fill-mask" if not clm else "text-generation",
    )
    # Validation takes the streams in turn, so that an evaluation capped by eval_batches sees them all.
    validation = [streams["validation"][n] for n in names]
    eval_dataset = Subset(ConcatDataset(validation), interleaved_indices([len(ds) for ds in validation]))
    trainer = Trainer(
        cfg, CausalLMTask(model) if clm else XLMMaskedLMTask(model),
        ConcatDataset([streams["train"][n] for n in names]), collator,
        eval_dataset=eval_dataset, processor=tokenizer,
        accelerator=accelerator, description=description, run_config=cfg, batch_sampler=sampler,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        print({k: results[k] for k in ("steps", "eval_loss", "eval_accuracy", "eval_perplexity") if k in results})
    return results


if __name__ == "__main__":
    run(main)
