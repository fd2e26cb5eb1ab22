"""Pretrain a BERT-style encoder: masked language modelling by default, or any text objective (``objective=``).

    accelerate launch recipes/pretrain_mlm.py [--config recipes/configs/pretrain_mlm.yaml] [key=value ...]
    python recipes/pretrain_mlm.py --config recipes/configs/pretrain_mlm_continue.yaml model.name_or_path=<checkpoint>
    python recipes/pretrain_mlm.py objective=my_objective.py objective_args.rate=0.2   # your own objective
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
class PretrainTextConfig(TrainConfig):
    #: A registered text objective (mlm, clm ...) or your own: path/to/file.py defining OBJECTIVE.
    objective: str = "mlm"
    data: TextDataConfig = field(default_factory=TextDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


PretrainMLMConfig = with_objective_settings(PretrainTextConfig, "text")  # + one section per objective: mlm, clm ...


def main(argv=None):
    cfg = parse_config(PretrainMLMConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_mlm.yaml")
    objective = find_objective(cfg.objective, "text")
    settings = objective_settings(cfg, objective)
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        corpus = TextCorpus(cfg.data, seed=cfg.seed)  # the text, or a store from `nlp-ssl prepare` (data.prepared)
        tokenizer = corpus.tokenizer(cfg.tokenizer, cfg.model)
        parts = objective.parts(settings, TextSetup(tokenizer, cfg.model, cfg.seed, cfg.optim.learning_rate))
        check_block_size(cfg.data.block_size, parts.model.config)
        blocks = parts.examples(corpus, tokenizer) if parts.examples else corpus.blocks(tokenizer, word_ids=parts.word_ids)

    description = RunDescription(
        objective=parts.summary, data=corpus_name(cfg.data), pipeline_tag=parts.pipeline_tag,
        **data_card(cfg.data.source, cfg.data.train_file),
    )
    trainer = Trainer(
        cfg, parts.task, blocks["train"], parts.collator, eval_dataset=blocks["validation"],
        eval_collator=parts.eval_collator, processor=tokenizer, accelerator=accelerator,
        description=description, run_config=cfg,
    )
    baseline = parts.baseline(blocks["train"], blocks["validation"]) if parts.baseline and not cfg.data.streaming else {}
    results = trainer.fit(extra_results=baseline)
    if accelerator.is_main_process:
        keys = ("steps", "eval_loss", "eval_perplexity", "eval_accuracy", "eval_unigram_baseline_accuracy")
        print(run_summary(results, cfg.output_dir, keys))
    return results


if __name__ == "__main__":
    run(main)
