"""Pretrain a BERT-style model with masked language modelling, from scratch or from a checkpoint.

    accelerate launch recipes/pretrain_mlm.py [--config recipes/configs/pretrain_mlm.yaml] [key=value ...]
    python recipes/pretrain_mlm.py --config recipes/configs/pretrain_mlm_continue.yaml model.name_or_path=<checkpoint>
"""

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import check_ranges, parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.text import TextDataConfig, corpus_name, load_text_splits, tokenize_and_pack
from nlp_ssl.models import ModelConfig, check_block_size, special_token_fields
from nlp_ssl.models.continued import build_pretraining_model
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.objectives.mlm import unigram_baseline_accuracy
from nlp_ssl.reporting import RunDescription
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.tokenizer_setup import TokenizerConfig, load_or_train_tokenizer
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator


@dataclass
class MLMConfig:
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = False
    pad_to_multiple_of: int | None = None
    #: Project to the vocabulary only at masked positions (the checkpoint is unchanged).
    sparse_head: bool = True

    def __post_init__(self):
        check_ranges(self, mlm_probability="(0, 1)", mask_replace_prob="[0, 1]", random_replace_prob="[0, 1]",
                     pad_to_multiple_of="(0, inf)")


@dataclass
class PretrainMLMConfig(TrainConfig):
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)


def main(argv=None):
    cfg = parse_config(PretrainMLMConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_mlm.yaml")
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        raw = load_text_splits(cfg.data, seed=cfg.seed)
        tokenizer = load_or_train_tokenizer(cfg.tokenizer, raw["train"], cfg.data.text_column, cfg.data.cache_dir, cfg.model)
        collator = MLMCollator(
            tokenizer,
            mlm_probability=cfg.mlm.mlm_probability,
            mask_replace_prob=cfg.mlm.mask_replace_prob,
            random_replace_prob=cfg.mlm.random_replace_prob,
            whole_word_mask=cfg.mlm.whole_word_mask,
            pad_to_multiple_of=cfg.mlm.pad_to_multiple_of,
            seed=cfg.seed,
        )
        model = build_pretraining_model(cfg.model, "masked_lm", tokenizer, learning_rate=cfg.learning_rate,
                                        **special_token_fields(tokenizer))
        check_block_size(cfg.data.block_size, model.config)
        data = cfg.data
        blocks = {
            split: tokenize_and_pack(ds, tokenizer, data.text_column, data.block_size, cfg.mlm.whole_word_mask, data.num_proc)
            for split, ds in raw.items()
        }

    description = RunDescription(
        objective=f"masked language modelling ({cfg.mlm.mlm_probability:.0%} masked, "
        f"{'whole-word' if cfg.mlm.whole_word_mask else 'token-level'})",
        data=corpus_name(cfg.data),
        pipeline_tag="fill-mask",
        **data_card(cfg.data.source, cfg.data.train_file),
    )
    trainer = Trainer(
        cfg, MaskedLMTask(model, sparse=cfg.mlm.sparse_head), blocks["train"], collator,
        eval_dataset=blocks["validation"], processor=tokenizer, accelerator=accelerator,
        description=description, run_config=cfg,
    )
    baseline = {} if cfg.data.streaming else {
        "eval_unigram_baseline_accuracy": unigram_baseline_accuracy(blocks["train"], blocks["validation"], collator)
    }
    results = trainer.fit(extra_results=baseline)
    if accelerator.is_main_process:
        keys = ("steps", "eval_loss", "eval_perplexity", "eval_accuracy", "eval_unigram_baseline_accuracy")
        print({k: results[k] for k in keys if k in results})
    return results


if __name__ == "__main__":
    run(main)
