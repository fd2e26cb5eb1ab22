import numpy as np
import pytest
import torch
from transformers import DataCollatorForLanguageModeling

from nlp_ssl.data.text import tokenize_and_pack
from nlp_ssl.errors import DataError
from nlp_ssl.objectives import MLMCollator
from tests.helpers import toy_texts


@pytest.fixture(scope="module")
def blocks(wordpiece_tokenizer):
    from datasets import Dataset

    ds = Dataset.from_dict({"text": toy_texts(400, seed=1)})
    return tokenize_and_pack(ds, wordpiece_tokenizer, "text", 64, word_ids=True)


def collate_many(collator, blocks, n_batches=18, batch_size=16):
    out = [collator([blocks[i] for i in range(b * batch_size, (b + 1) * batch_size)]) for b in range(n_batches)]
    return {k: torch.cat([o[k] for o in out]) for k in out[0]}, torch.cat(
        [torch.tensor([blocks[i]["input_ids"] for i in range(b * batch_size, (b + 1) * batch_size)]) for b in range(n_batches)]
    )


def test_mask_rate_and_80_10_10_split(wordpiece_tokenizer, blocks):
    tok = wordpiece_tokenizer
    batch, original = collate_many(MLMCollator(tok, seed=3), blocks)
    special = torch.isin(original, torch.tensor(tok.all_special_ids))
    masked = batch["labels"] != -100
    rate = masked.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01
    assert torch.equal(batch["labels"][masked], original[masked])
    chosen = batch["input_ids"][masked]
    as_mask = (chosen == tok.mask_token_id).float().mean().item()
    kept = (chosen == original[masked]).float().mean().item()
    random = 1 - as_mask - kept
    assert abs(as_mask - 0.8) < 0.03
    # a random replacement can hit the original token; the vocabulary here is ~120 tokens
    assert abs(kept - 0.1) < 0.03 and abs(random - 0.1) < 0.03
    assert not torch.isin(batch["input_ids"][masked & (batch["input_ids"] != tok.mask_token_id)],
                          torch.tensor(tok.all_special_ids)).any()


def test_specials_and_pads_are_never_masked(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    examples = [{"input_ids": tok(t)["input_ids"]} for t in toy_texts(64, seed=2)]
    collator = MLMCollator(tok, mlm_probability=0.9, mask_replace_prob=1.0, random_replace_prob=0.0, pad_to_multiple_of=8)
    batch = collator(examples)
    assert batch["input_ids"].shape[1] % 8 == 0
    labels = batch["labels"]
    pads = batch["attention_mask"] == 0
    assert pads.any() and (labels[pads] == -100).all()
    padded = [e["input_ids"] + [tok.pad_token_id] * (batch["input_ids"].shape[1] - len(e["input_ids"])) for e in examples]
    special = torch.isin(torch.tensor(padded), torch.tensor(tok.all_special_ids))
    assert (labels[special] == -100).all()
    assert (labels != -100).float().sum() / (~special).sum() > 0.8


def test_whole_word_masking_masks_every_piece_of_a_word(wordpiece_tokenizer, blocks):
    collator = MLMCollator(wordpiece_tokenizer, whole_word_mask=True, seed=5)
    examples = [blocks[i] for i in range(64)]
    batch = collator(examples)
    masked = batch["labels"] != -100
    multi_piece_words = 0
    for row, example in enumerate(examples):
        words = np.array(example["word_ids"])
        for w in set(words.tolist()) - {-1}:
            positions = np.nonzero(words == w)[0]
            states = masked[row, positions]
            assert states.all() or not states.any(), f"word {w} of row {row} partly masked"
            multi_piece_words += len(positions) > 1 and bool(states.all())
    assert multi_piece_words > 0


def test_deterministic_per_batch_whatever_the_order(wordpiece_tokenizer, blocks):
    c1, c2 = MLMCollator(wordpiece_tokenizer, seed=11), MLMCollator(wordpiece_tokenizer, seed=11)
    a, b = [blocks[i] for i in range(8)], [blocks[i] for i in range(8, 16)]
    first = (c1(a), c1(b))
    second_b, second_a = c2(b), c2(a)  # another worker, other order
    assert torch.equal(first[0]["input_ids"], second_a["input_ids"])
    assert torch.equal(first[1]["labels"], second_b["labels"])
    other = MLMCollator(wordpiece_tokenizer, seed=12)(a)
    assert not torch.equal(other["labels"], first[0]["labels"])


def test_same_masks_in_dataloader_workers(wordpiece_tokenizer, blocks):
    from torch.utils.data import DataLoader

    collator = MLMCollator(wordpiece_tokenizer, seed=1)
    subset = blocks.select(range(64))
    plain = [b["labels"] for b in DataLoader(subset, batch_size=16, collate_fn=collator)]
    workers = [b["labels"] for b in DataLoader(subset, batch_size=16, collate_fn=collator, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(plain, workers))


def test_matches_transformers_output_schema(wordpiece_tokenizer, blocks):
    examples = [{"input_ids": blocks[i]["input_ids"]} for i in range(4)]
    ours = MLMCollator(wordpiece_tokenizer)(examples)
    theirs = DataCollatorForLanguageModeling(wordpiece_tokenizer)(examples)
    assert set(theirs) <= set(ours) | {"token_type_ids"}
    assert all(ours[k].shape == theirs[k].shape and ours[k].dtype == theirs[k].dtype for k in ours)


def test_tokenizer_without_mask_token_is_rejected(tmp_path):
    from nlp_ssl.text.tokenizers import train_tokenizer

    tok = train_tokenizer("wordpiece", toy_texts(50), 80, tmp_path / "t")
    tok.mask_token = None
    with pytest.raises(DataError, match="has no mask token"):
        MLMCollator(tok)


def test_whole_word_needs_word_ids(wordpiece_tokenizer):
    with pytest.raises(DataError, match="word_ids"):
        MLMCollator(wordpiece_tokenizer, whole_word_mask=True)([{"input_ids": [2, 10, 11, 3]}])


def test_masks_depend_on_the_example_not_its_batch(wordpiece_tokenizer, blocks):
    collator = MLMCollator(wordpiece_tokenizer, seed=2)
    examples = [blocks[i] for i in range(8)]
    whole = collator(examples)
    split = [collator(examples[:3]), collator(examples[3:])]
    assert torch.equal(whole["labels"], torch.cat([s["labels"] for s in split]))
    assert torch.equal(whole["input_ids"], torch.cat([s["input_ids"] for s in split]))
    collator.set_epoch(1)  # dynamic masking: another epoch, other masks
    assert not torch.equal(collator(examples)["labels"], whole["labels"])


@pytest.mark.parametrize("kind, vocab", [("bytelevel_bpe", 300), ("bpe", 60)])
def test_whole_word_masking_with_other_tokenizers(tmp_path, kind, vocab):
    """Word boundaries come from the fast tokenizer itself, not from WordPiece's ## prefixes."""
    from datasets import Dataset

    from nlp_ssl.text.tokenizers import train_tokenizer

    tok = train_tokenizer(kind, toy_texts(300, seed=3), vocab, tmp_path / kind)
    blocks = tokenize_and_pack(Dataset.from_dict({"text": toy_texts(200, seed=4)}), tok, "text", 48, word_ids=True)
    examples = [blocks[i] for i in range(48)]
    batch = MLMCollator(tok, whole_word_mask=True, seed=1)(examples)
    masked = batch["labels"] != -100
    split_words = 0
    for row, example in enumerate(examples):
        words = np.array(example["word_ids"])
        for w in set(words.tolist()) - {-1}:
            states = masked[row, np.nonzero(words == w)[0]]
            assert states.all() or not states.any()
            split_words += int((words == w).sum() > 1)
    assert split_words > 0, "the test needs words split into several tokens"
    assert 0.1 < masked.float().mean().item() < 0.2


def test_tlm_masks_depend_on_the_example_not_its_batch(tmp_path):
    from nlp_ssl.objectives import TLMCollator
    from nlp_ssl.text.tokenizers import train_tokenizer

    tok = train_tokenizer("bpe", toy_texts(200, seed=5), 80, tmp_path / "bpe")
    texts = toy_texts(8, seed=6)
    examples = [
        {"src_ids": tok(t, add_special_tokens=False)["input_ids"], "tgt_ids": tok(t[::-1], add_special_tokens=False)["input_ids"],
         "src_lang": "en", "tgt_lang": "es"}
        for t in texts
    ]
    collator = TLMCollator(tok, {"en": 0, "es": 1}, seed=4, max_length=200)
    whole = collator(examples)
    parts = [collator(examples[:5]), collator(examples[5:])]
    for key in ("input_ids", "labels"):
        width = whole[key].shape[1]
        stitched = torch.cat([
            torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]), value=-100 if key == "labels" else tok.pad_token_id)
            for p in parts
        ])
        assert torch.equal(whole[key], stitched), key
    collator.set_epoch(1)
    assert not torch.equal(collator(examples)["labels"], whole["labels"])
