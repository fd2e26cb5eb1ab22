"""Your own objective, outside nlp_ssl: ELECTRA's replaced-token detection, without the generator.

    nlp-ssl run pretrain_mlm objective=replaced_tokens.py objective_args.replace_prob=0.2

Some tokens are swapped for random ones; a token classifier says, for every token, whether it was
swapped. The file defines a collator, a task and ``OBJECTIVE``; the trainer gives it the rest
(accumulation, several processes, checkpoints and exact resume, the Hub, the model card).
"""

from dataclasses import dataclass

import torch
from transformers import BertConfig, BertForTokenClassification

from nlp_ssl.objectives.masking import RowRandom, attention_mask_from_lengths, pad_column
from nlp_ssl.objectives.registry import Objective, Parts
from nlp_ssl.tasks.base import Task, cross_entropy_sum


@dataclass
class Settings:  # objective_args.<field>=... on the command line
    replace_prob: float = 0.15


class ReplaceTokens:
    """Seeded per example (its tokens, the seed and the epoch), so batching and resumes change nothing."""

    def __init__(self, tokenizer, replace_prob: float, seed: int):
        self.pad, self.vocab, self.p, self.seed, self.epoch = tokenizer.pad_token_id, len(tokenizer), replace_prob, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __call__(self, examples):
        ids, lengths = pad_column(examples, "input_ids", self.pad)
        mask = attention_mask_from_lengths(lengths, ids.shape[1])
        rng = RowRandom(self.seed, ids, lengths, self.epoch)
        swap = torch.from_numpy(rng.uniform(0, ids.shape[1]) < self.p) & mask.bool()
        random_ids = torch.from_numpy((rng.uniform(1, ids.shape[1]) * self.vocab).astype("int64"))
        input_ids = torch.where(swap, random_ids, torch.from_numpy(ids))
        labels = (input_ids != torch.from_numpy(ids)).long().masked_fill(mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


class ReplacedTokenTask(Task):
    """Losses are sums with counts: the trainer divides by the tokens of the whole optimizer step."""

    def count_items(self, batch):
        return {"loss": (batch["labels"] != -100).sum()}

    def forward(self, input_ids, attention_mask, labels):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss, count, correct = cross_entropy_sum(logits, labels)
        return {"losses": {"loss": (loss, count)}, "metrics": {"accuracy": (correct, count)}}


def parts(settings: Settings, setup) -> Parts:
    config = BertConfig(vocab_size=len(setup.tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, num_labels=2, pad_token_id=setup.tokenizer.pad_token_id)
    model = BertForTokenClassification(config)  # a plain HF model: that is what gets saved
    collator = ReplaceTokens(setup.tokenizer, settings.replace_prob, setup.seed)
    return Parts(model, ReplacedTokenTask(model), collator, summary="replaced-token detection",
                 pipeline_tag="token-classification")


OBJECTIVE = Objective("replaced_tokens", "text", parts, Settings)
