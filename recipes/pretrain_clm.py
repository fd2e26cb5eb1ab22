"""Pretrain a GPT-2-style model with causal language modelling, from scratch or from a checkpoint.

    accelerate launch recipes/pretrain_clm.py [--config recipes/configs/pretrain_clm.yaml] [key=value ...]
    python recipes/pretrain_clm.py --config recipes/configs/pretrain_clm_continue.yaml model.name_or_path=<checkpoint>
"""

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import check_ranges, parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.text import TextDataConfig, corpus_name, load_text_splits, tokenize_and_pack
from nlp_ssl.models import ModelConfig, check_block_size
from nlp_ssl.models.continued import build_pretraining_model
from nlp_ssl.objectives import CLMCollator
from nlp_ssl.reporting import RunDescription
from nlp_ssl.tasks.causal_lm import CausalLMTask
from nlp_ssl.tokenizer_setup import TokenizerConfig, load_or_train_tokenizer
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator


@dataclass
class CLMConfig:
    #: Packed documents do not attend to each other (positions restart after each EOS).
    document_aware: bool = True
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        check_ranges(self, pad_to_multiple_of="(0, inf)")


@dataclass
class PretrainCLMConfig(TrainConfig):
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="bytelevel_bpe"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="gpt2"))
    clm: CLMConfig = field(default_factory=CLMConfig)


def main(argv=None):
    cfg = parse_config(PretrainCLMConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_clm.yaml")
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        raw = load_text_splits(cfg.data, seed=cfg.seed)
        tokenizer = load_or_train_tokenizer(cfg.tokenizer, raw["train"], cfg.data.text_column, cfg.data.cache_dir, cfg.model)
        collator = CLMCollator(tokenizer, document_aware=cfg.clm.document_aware, pad_to_multiple_of=cfg.clm.pad_to_multiple_of)
        model = build_pretraining_model(
            cfg.model, "causal_lm", tokenizer, learning_rate=cfg.learning_rate,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        check_block_size(cfg.data.block_size, model.config)
        blocks = {
            split: tokenize_and_pack(ds, tokenizer, cfg.data.text_column, cfg.data.block_size, num_proc=cfg.data.num_proc)
            for split, ds in raw.items()
        }

    description = RunDescription(
        objective="causal language modelling" + (" (documents kept apart in packed blocks)" if cfg.clm.document_aware else ""),
        data=corpus_name(cfg.data),
        pipeline_tag="text-generation",
        **data_card(cfg.data.source, cfg.data.train_file),
    )
    trainer = Trainer(
        cfg, CausalLMTask(model), blocks["train"], collator,
        eval_dataset=blocks["validation"], processor=tokenizer, accelerator=accelerator,
        description=description, run_config=cfg,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        print({k: results[k] for k in ("steps", "eval_loss", "eval_accuracy", "eval_perplexity") if k in results})
    return results


if __name__ == "__main__":
    run(main)
