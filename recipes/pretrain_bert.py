"""Pretrain BERT as BERT did: masked language modelling plus next sentence (or, with sop, sentence order) prediction.

    accelerate launch recipes/pretrain_bert.py [--config recipes/configs/pretrain_bert.yaml] [key=value ...]

NSP pairs are built from whole documents, so the documents are split into train and validation
first: no sentence of a validation document is ever a training A or B.
"""

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.documents import DocumentDataConfig, document_texts, load_document_splits
from nlp_ssl.data.nsp_pairs import build_nsp_dataset
from nlp_ssl.models import ModelConfig, build_model, check_block_size
from nlp_ssl.objectives import NSPCollator
from nlp_ssl.objectives.mlm import MLMConfig
from nlp_ssl.tasks.bert_pretraining import BertPretrainingTask
from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator
from nlp_ssl.training.reporting import RunDescription, run_summary


@dataclass
class BertObjectiveConfig:
    """BERT's sentence-pair loss beside masked words: next-sentence prediction, or sentence order with sop=true."""

    #: ALBERT's sentence order prediction instead of next sentence prediction.
    sop: bool = False


@dataclass
class PretrainBertConfig(TrainConfig):
    MOVED_KEYS = {"bert.mlm_probability": "mlm.mlm_probability", "bert.pad_to_multiple_of": "mlm.pad_to_multiple_of"}
    data: DocumentDataConfig = field(default_factory=DocumentDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bert: BertObjectiveConfig = field(default_factory=BertObjectiveConfig)
    #: The masking of the MLM half (BERT's 15%, 80/10/10).
    mlm: MLMConfig = field(default_factory=MLMConfig)


def main(argv=None):
    cfg = parse_config(PretrainBertConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_bert.yaml")
    cfg.mlm.check_supported("pretrain_bert", "mlm_probability", "mask_replace_prob", "random_replace_prob", "pad_to_multiple_of")
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        documents, column = load_document_splits(cfg.data, cfg.seed)
        tokenizer = load_or_train_tokenizer(cfg.tokenizer, document_texts(documents["train"], column), "text", cfg.data.cache_dir)
        model = build_model(
            cfg.model, "pretraining", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, type_vocab_size=2
        )
        check_block_size(cfg.data.max_seq_length, model.config)
        pairs = {
            split: build_nsp_dataset(
                docs, tokenizer, column, max_seq_length=cfg.data.max_seq_length, short_seq_prob=cfg.data.short_seq_prob,
                dupe_factor=cfg.data.dupe_factor if split == "train" else 1, seed=cfg.seed + (split != "train"),
                sop=cfg.bert.sop, num_proc=cfg.data.num_proc, cache_dir=cfg.data.cache_dir,
            )
            for split, docs in documents.items()
        }
        mlm = cfg.mlm
        collator = NSPCollator(tokenizer, mlm_probability=mlm.mlm_probability, mask_replace_prob=mlm.mask_replace_prob,
                               random_replace_prob=mlm.random_replace_prob, pad_to_multiple_of=mlm.pad_to_multiple_of,
                               seed=cfg.seed)

    description = RunDescription(
        objective=f"masked language modelling ({cfg.mlm.mlm_probability:.0%}) + "
        + ("sentence order prediction" if cfg.bert.sop else "next sentence prediction"),
        data=cfg.data.train_file or cfg.data.documents,
        pipeline_tag="fill-mask",
        **data_card(cfg.data.documents, cfg.data.train_file),
    )
    trainer = Trainer(
        cfg, BertPretrainingTask(model), pairs["train"], collator,
        eval_dataset=pairs["validation"], processor=tokenizer, accelerator=accelerator,
        description=description, run_config=cfg,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        keys = ("steps", "eval_loss", "eval_mlm_loss", "eval_nsp_loss", "eval_mlm_accuracy", "eval_nsp_accuracy")
        print(run_summary(results, cfg.output_dir, keys))
    return results


if __name__ == "__main__":
    run(main)
