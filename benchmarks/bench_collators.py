"""How fast each text collator is, and what share of a training step it costs.

For MLM, CLM, CLM document-aware, NSP and TLM: the collator's samples/s on real examples (packed
128-token blocks of the built-in corpus, NSP pairs of its documents, TLM pairs of the built-in en-es
verses), then the time of one optimizer step of the objective's tiny model (preset ``tiny``: 2
layers, 128 hidden) on such a batch, and collation as a percentage of that step. Collation runs in
the training process when ``impl.num_workers=0``, so this share is what it slows training down by
(target: under 5%).

    python benchmarks/bench_collators.py [--batch_size 32] [--batches 50] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_mlm import samples_per_s  # the same measurement as the MLM benchmark (run from benchmarks/)
from datasets import Dataset

from nlp_ssl.data.nsp_pairs import build_nsp_dataset
from nlp_ssl.data.parallel import load_sword_pairs
from nlp_ssl.data.text import TextDataConfig, load_text_splits, tokenize_and_pack
from nlp_ssl.data.xlm_streams import prepare_tlm_dataset
from nlp_ssl.models import ModelConfig, build_model
from nlp_ssl.objectives import CLMCollator, MLMCollator, NSPCollator, TLMCollator
from nlp_ssl.tasks.bert_pretraining import BertPretrainingTask
from nlp_ssl.tasks.causal_lm import CausalLMTask
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.tasks.xlm import XLMMaskedLMTask
from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer

BLOCK = 128


def rows_of(ds: Dataset, columns: list[str], n: int) -> list[dict]:
    """Plain Python rows, so that only the collator is timed, not dataset indexing."""
    part = ds.select(range(min(n, len(ds))))
    values = {c: part[c] for c in columns}
    return [{c: values[c][i] for c in columns} for i in range(len(part))]


def step_seconds(task, batch: dict, steps: int) -> float:
    """Mean time of forward, backward and AdamW step on one collated batch (after one warm-up)."""
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    task.train()

    def step():
        out = task(**batch)["losses"]
        loss = sum(total / count.clamp(min=1) for total, count in out.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def setups(n_rows: int):
    """(name, collator, rows, task) for each objective, on the built-in corpora."""
    raw = load_text_splits(TextDataConfig(), seed=0)["train"]
    wordpiece = load_or_train_tokenizer(TokenizerConfig(kind="wordpiece"), raw, "text")
    bytelevel = load_or_train_tokenizer(TokenizerConfig(kind="bytelevel_bpe"), raw, "text")
    bpe = load_or_train_tokenizer(TokenizerConfig(kind="bpe"), raw, "text")
    tiny = ModelConfig(size="tiny")

    mlm_rows = rows_of(tokenize_and_pack(raw, wordpiece, "text", BLOCK), ["input_ids"], n_rows)
    bert_mlm = build_model(tiny, "masked_lm", vocab_size=len(wordpiece), pad_token_id=wordpiece.pad_token_id)
    yield "MLM", MLMCollator(wordpiece, seed=0), mlm_rows, MaskedLMTask(bert_mlm)

    clm_rows = rows_of(tokenize_and_pack(raw, bytelevel, "text", BLOCK), ["input_ids"], n_rows)
    gpt2_cfg = ModelConfig(arch="gpt2", size="tiny")
    eos = bytelevel.eos_token_id
    ids = dict(vocab_size=len(bytelevel), bos_token_id=eos, eos_token_id=eos, pad_token_id=bytelevel.pad_token_id)
    yield "CLM", CLMCollator(bytelevel), clm_rows, CausalLMTask(build_model(gpt2_cfg, "causal_lm", **ids))
    aware = CLMCollator(bytelevel, document_aware=True)
    yield "CLM document-aware", aware, clm_rows, CausalLMTask(build_model(gpt2_cfg, "causal_lm", **ids))

    nsp = build_nsp_dataset(raw.select(range(3000)), wordpiece, "text", max_seq_length=BLOCK, dupe_factor=1, seed=0)
    nsp_rows = rows_of(nsp, ["input_ids", "token_type_ids", "next_sentence_label"], n_rows)
    bert = build_model(tiny, "pretraining", vocab_size=len(wordpiece), pad_token_id=wordpiece.pad_token_id, type_vocab_size=2)
    yield "NSP", NSPCollator(wordpiece, seed=0), nsp_rows, BertPretrainingTask(bert)

    pairs = load_sword_pairs()
    tlm = prepare_tlm_dataset(pairs.select(range(min(len(pairs), n_rows))), bpe, "en", "es", max_length=BLOCK)
    tlm_rows = rows_of(tlm, ["src_ids", "tgt_ids", "src_lang", "tgt_lang"], n_rows)
    lang2id = {"en": 0, "es": 1}
    xlm = build_model(
        ModelConfig(arch="xlm", size="tiny"), "masked_lm", vocab_size=len(bpe), n_langs=2, use_lang_emb=True,
        lang2id=lang2id, id2lang={0: "en", 1: "es"}, pad_index=bpe.pad_token_id, eos_index=bpe.eos_token_id,
        bos_index=bpe.bos_token_id, unk_index=bpe.unk_token_id, mask_index=bpe.mask_token_id, mask_token_id=bpe.mask_token_id,
    )
    yield "TLM", TLMCollator(bpe, lang2id, max_length=BLOCK, seed=0), tlm_rows, XLMMaskedLMTask(xlm)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=50, help="batches per collator timing")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per objective")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows_needed = args.batches * args.batch_size
    table = []
    for name, collator, rows, task in setups(rows_needed):
        sps = samples_per_s(collator, rows, args.batch_size)
        collate_s = args.batch_size / sps
        step_s = step_seconds(task, collator(rows[: args.batch_size]), args.steps)
        table.append((name, sps, collate_s * 1e3, step_s * 1e3, 100 * collate_s / step_s, len(rows)))

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch {args.batch_size}, sequences up to {BLOCK} tokens, tiny models")
    header = f"{'collator':<20} {'samples/s':>10} {'ms/batch':>9} {'train step ms':>14} {'collate % of step':>18}  (target < 5%)"
    print(header)
    print("-" * len(header))
    for name, sps, collate_ms, step_ms, share, n in table:
        flag = "ok" if share < 5 else "OVER"
        print(f"{name:<20} {sps:>10.0f} {collate_ms:>9.2f} {step_ms:>14.1f} {share:>17.2f}%  {flag}")


if __name__ == "__main__":
    main()
