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

from datasets import concatenate_datasets
from torch.utils.data import ConcatDataset, Subset

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.mixing import AlternatingBatchSampler, interleaved_indices, parse_ratio, round_robin_schedule
from nlp_ssl.data.parallel import XLMDataConfig, load_monolingual_splits, load_pair_splits, pair_texts, parse_direction
from nlp_ssl.data.xlm_streams import xlm_streams
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model, check_block_size
from nlp_ssl.models.builders import xlm_fields
from nlp_ssl.objectives import TLMCollator
from nlp_ssl.objectives.mlm import MLMConfig
from nlp_ssl.objectives.registry import find_objective
from nlp_ssl.tasks.causal_lm import CausalLMTask
from nlp_ssl.tasks.xlm import XLMMaskedLMTask
from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator
from nlp_ssl.training.reporting import RunDescription, run_summary


@dataclass
class XLMObjectiveConfig:
    """XLM's objective on the monolingual streams (CLM or MLM) and how it alternates with translation LM on pairs."""

    objective: Literal["mlm", "clm"] = "mlm"
    #: Optimizer steps per round: ``mlm`` (or ``clm``) steps rotate over the languages, ``tlm`` steps
    #: over the pairs. Default: ``mlm:1,tlm:1``, or ``clm:1`` for the causal objective.
    schedule: str | None = None


@dataclass
class PretrainXLMConfig(TrainConfig):
    MOVED_KEYS = {"xlm.mlm_probability": "mlm.mlm_probability"}
    data: XLMDataConfig = field(default_factory=XLMDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="bpe"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="xlm"))
    xlm: XLMObjectiveConfig = field(default_factory=XLMObjectiveConfig)
    #: The masking of the MLM and TLM streams.
    mlm: MLMConfig = field(default_factory=MLMConfig)


def main(argv=None):
    cfg = parse_config(PretrainXLMConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_xlm.yaml")
    cfg.mlm.check_supported("pretrain_xlm", "mlm_probability", "mask_replace_prob", "random_replace_prob", "pad_to_multiple_of")
    accelerator = make_accelerator(cfg)
    monolingual, data = find_objective(cfg.xlm.objective, "text"), cfg.data  # its head and whether it is causal
    clm = monolingual.causal
    schedule_text = cfg.xlm.schedule or (f"{monolingual.name}:1" + ("" if clm else ",tlm:1"))
    ratio = parse_ratio(schedule_text, "xlm.schedule")
    directions = [parse_direction(p) for p in data.pairs] if ratio.get("tlm") else []
    if clm and directions:
        raise ConfigError("xlm.schedule: TLM steps need xlm.objective=mlm; the causal objective uses the monolingual streams")
    members = {monolingual.name: data.languages, "tlm": [f"{s}-{t}" for s, t in directions]}
    step_streams = round_robin_schedule(ratio, members)  # e.g. en, en-es, fr, es-en, es, en-es, ...
    lang2id = {lang: i for i, lang in enumerate(dict.fromkeys([*data.languages, *(lang for d in directions for lang in d)]))}

    with accelerator.main_process_first():
        mono = load_monolingual_splits(data, cfg.seed)
        pairs = load_pair_splits(data, cfg.seed) if directions else None
        texts = [mono[lang]["train"].select_columns(["text"]) for lang in mono] + ([pair_texts(pairs["train"])] if pairs else [])
        tokenizer = load_or_train_tokenizer(cfg.tokenizer, concatenate_datasets(texts), "text", data.cache_dir)
        model = build_model(cfg.model, monolingual.head, **xlm_fields(cfg.model, tokenizer, lang2id, clm))
        check_block_size(data.max_length, model.config)
        streams = xlm_streams(mono, pairs, directions, tokenizer, data.max_length, data.num_proc)
        mlm = cfg.mlm
        collator = TLMCollator(tokenizer, lang2id, mlm_probability=mlm.mlm_probability, mask_replace_prob=mlm.mask_replace_prob,
                               random_replace_prob=mlm.random_replace_prob, max_length=data.max_length,
                               pad_to_multiple_of=mlm.pad_to_multiple_of, seed=cfg.seed, causal=clm)

    names = list(streams["train"])
    sampler = AlternatingBatchSampler(
        [len(streams["train"][n]) for n in names], [names.index(n) for n in step_streams], cfg.impl.micro_batch_size,
        batches_per_step=max(cfg.train.global_batch_size // cfg.impl.micro_batch_size, 1), seed=cfg.seed,
        names=[f"{'tlm' if '-' in n else cfg.xlm.objective} stream {n}" for n in names],
    )
    pair_data = f"; {data.pairs_file or 'KJV / Reina-Valera 1909 verse pairs'}" if directions else ""
    description = RunDescription(
        objective=("causal language modelling" if clm else "masked + translation language modelling")
        + f" (XLM), steps alternating {schedule_text} over {', '.join(names)}",
        data=f"Wikipedia leads ({', '.join(data.languages)}){pair_data}",
        pipeline_tag="fill-mask" if not clm else "text-generation",
        **data_card("builtin:wiki"),
    )
    # Validation takes the streams in turn, so that an evaluation capped by eval_batches sees them all.
    validation = [streams["validation"][n] for n in names]
    trainer = Trainer(
        cfg, CausalLMTask(model) if clm else XLMMaskedLMTask(model),
        ConcatDataset([streams["train"][n] for n in names]), collator,
        eval_dataset=Subset(ConcatDataset(validation), interleaved_indices([len(ds) for ds in validation])),
        processor=tokenizer, accelerator=accelerator, description=description, run_config=cfg, batch_sampler=sampler,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        print(run_summary(results, cfg.output_dir, ("steps", "eval_loss", "eval_accuracy", "eval_perplexity")))
    return results


if __name__ == "__main__":
    run(main)
