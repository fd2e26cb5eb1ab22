"""MLM speed against the standard Hugging Face way, measured in the same run.

1. Collator samples/s: ``MLMCollator`` vs transformers' ``DataCollatorForLanguageModeling`` on the
   same packed 128-token blocks of the built-in corpus.
2. Training tokens/s: our masked-LM task (vocabulary projection only at masked positions) fed by
   ``MLMCollator`` vs ``BertForMaskedLM`` computing its own loss, fed by
   ``DataCollatorForLanguageModeling``. Same tiny BERT (2 layers, 128 hidden, BERT's 30,522-token
   vocabulary), same batches, same optimizer.

    python benchmarks/bench_mlm.py [--batches 200] [--train_steps 30] [--vocab_size 30522]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

from nlp_ssl.data.text import TextDataConfig, load_text_splits, tokenize_and_pack
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer


def packed_blocks(block_size: int, n: int):
    raw = load_text_splits(TextDataConfig(), seed=0)["train"]
    tokenizer = load_or_train_tokenizer(TokenizerConfig(), raw, "text")
    blocks = tokenize_and_pack(raw, tokenizer, "text", block_size)
    rows = [{"input_ids": ids} for ids in blocks.select(range(min(n, len(blocks))))["input_ids"]]
    return tokenizer, rows


def samples_per_s(collator, rows, batch_size: int, repeats: int = 3) -> float:
    batches = [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            collator(batch)
        best = max(best, len(batches) * batch_size / (time.perf_counter() - start))
    return best


def train_tokens_per_s(step, collator, rows, batch_size: int, steps: int) -> float:
    batches = [rows[i : i + batch_size] for i in range(0, steps * batch_size, batch_size)]
    step(collator(batches[0]))  # warm-up
    start = time.perf_counter()
    tokens = 0
    for batch in batches[1:]:
        collated = collator(batch)
        step(collated)
        tokens += int(collated["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


def make_step(module, compute_loss):
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step(batch):
        loss = compute_loss(module, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def ours_loss(task, batch):
    out = task(**batch)["losses"]["loss"]
    return out[0] / out[1]


def hf_loss(model, batch):
    return model(**batch).loss


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="collator batches of 32")
    parser.add_argument("--train_steps", type=int, default=30)
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer, rows = packed_blocks(128, args.batches * args.batch_size)

    ours = MLMCollator(tokenizer, seed=0)
    standard = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    ours_sps = samples_per_s(ours, rows, args.batch_size)
    hf_sps = samples_per_s(standard, rows, args.batch_size)

    config = BertConfig(
        vocab_size=max(args.vocab_size, len(tokenizer)), hidden_size=128, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=512, max_position_embeddings=512,
    )
    torch.manual_seed(0)
    hf_model = BertForMaskedLM(config).train()
    task = MaskedLMTask(BertForMaskedLM(config)).train()
    task.model.load_state_dict(hf_model.state_dict())
    ours_tps = train_tokens_per_s(make_step(task, ours_loss), ours, rows, args.batch_size, args.train_steps)
    hf_tps = train_tokens_per_s(make_step(hf_model, hf_loss), standard, rows, args.batch_size, args.train_steps)

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch {args.batch_size} x 128 tokens, vocab {config.vocab_size}")
    print(f"collator samples/s     ours {ours_sps:10.0f}   transformers {hf_sps:10.0f}   "
          f"ratio {ours_sps / hf_sps:6.1f}x  (target >= 10x)")
    print(f"training tokens/s      ours {ours_tps:10.0f}   transformers {hf_tps:10.0f}   "
          f"ratio {ours_tps / hf_tps:6.2f}x  (target >= 1.5x)")


if __name__ == "__main__":
    main()
