"""Pretrain a GPT-2-style decoder: causal language modelling by default, or any text objective (``objective=``).

    accelerate launch recipes/pretrain_clm.py [--config recipes/configs/pretrain_clm.yaml] [key=value ...]
    python recipes/pretrain_clm.py --config recipes/configs/pretrain_clm_continue.yaml model.name_or_path=<checkpoint>
"""

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.text import TextCorpus, TextDataConfig, corpus_name
from nlp_ssl.models import ModelConfig, check_block_size
from nlp_ssl.objectives.registry import TextSetup, find_objective, objective_settings, with_objective_settings
from nlp_ssl.text.tokenizers import TokenizerConfig
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator
from nlp_ssl.training.reporting import RunDescription, run_summary


@dataclass
class PretrainDecoderConfig(TrainConfig):
    #: A registered text objective (clm, mlm ...) or your own: path/to/file.py defining OBJECTIVE.
    objective: str = "clm"
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="bytelevel_bpe"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="gpt2"))


PretrainCLMConfig = with_objective_settings(PretrainDecoderConfig, "text")  # + one section per objective: clm, mlm ...


def main(argv=None):
    cfg = parse_config(PretrainCLMConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_clm.yaml")
    objective = find_objective(cfg.objective, "text")
    settings = objective_settings(cfg, objective)
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        corpus = TextCorpus(cfg.data, seed=cfg.seed)  # the text, or a store from `nlp-ssl prepare` (data.prepared)
        tokenizer = corpus.tokenizer(cfg.tokenizer, cfg.model)
        parts = objective.parts(settings, TextSetup(tokenizer, cfg.model, cfg.seed, cfg.optim.learning_rate))
        check_block_size(cfg.data.block_size, parts.model.config)
        blocks = corpus.blocks(tokenizer, word_ids=parts.word_ids)

    description = RunDescription(
        objective=parts.summary, data=corpus_name(cfg.data), pipeline_tag=parts.pipeline_tag,
        **data_card(cfg.data.source, cfg.data.train_file),
    )
    trainer = Trainer(
        cfg, parts.task, blocks["train"], parts.collator, eval_dataset=blocks["validation"],
        eval_collator=parts.eval_collator, processor=tokenizer, accelerator=accelerator,
        description=description, run_config=cfg,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        print(run_summary(results, cfg.output_dir, ("steps", "eval_loss", "eval_accuracy", "eval_perplexity")))
    return results


if __name__ == "__main__":
    run(main)
