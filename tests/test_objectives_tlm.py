"""TLM layout, masking and errors, monolingual chunks, the XLM task against the HF model's own loss, and sword pairs."""

import random

import pytest
import torch
from datasets import Dataset
from transformers import XLMConfig, XLMWithLMHeadModel

from nlp_ssl.data.xlm_streams import prepare_monolingual_dataset, prepare_tlm_dataset
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.tlm import TLMCollator
from nlp_ssl.tasks.xlm import XLMMaskedLMTask
from nlp_ssl.text.tokenizers import train_tokenizer

EN = "the cat sat on a mat while two dogs ran across green fields under the bright morning sun".split()
ES = "el gato se sentó en una alfombra mientras dos perros corrían por campos verdes bajo el sol".split()


def toy_sentences(words, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def xlm_tokenizer(tmp_path_factory):
    texts = toy_sentences(EN, 300, 0) + toy_sentences(ES, 300, 1)
    return train_tokenizer("bpe", texts, 200, tmp_path_factory.mktemp("tok") / "bpe")


# --- TLM ----------------------------------------------------------------------------------------


def test_tlm_layout_positions_and_langs(xlm_tokenizer):
    tok = xlm_tokenizer
    eos = tok.sep_token_id
    collator = TLMCollator(tok, {"en": 0, "es": 1}, mlm_probability=0.15)
    pair = {"src_ids": [10, 11, 12], "tgt_ids": [20, 21], "src_lang": "en", "tgt_lang": "es"}
    mono = {"src_ids": [30, 31], "tgt_ids": [], "src_lang": "es", "tgt_lang": ""}
    assert collator.layout(pair) == {
        "input_ids": [eos, 10, 11, 12, eos, eos, 20, 21, eos],
        "langs": [0, 0, 0, 0, 0, 1, 1, 1, 1],
        "position_ids": [0, 1, 2, 3, 4, 0, 1, 2, 3],
    }
    assert collator.layout(mono) == {"input_ids": [eos, 30, 31, eos], "langs": [1] * 4, "position_ids": [0, 1, 2, 3]}
    batch = collator([pair, mono])
    assert batch["langs"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3], [0, 1, 2, 3, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 9, [1] * 4 + [0] * 5]
    # Cut to max_length, the longer sentence first, keeping the four </s>.
    short = TLMCollator(tok, {"en": 0, "es": 1}, max_length=8).layout({**pair, "src_ids": list(range(40, 50))})
    assert short["input_ids"] == [eos, 40, 41, eos, eos, 20, 21, eos]
    assert short["position_ids"] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_tlm_masks_both_sentences_and_never_specials(xlm_tokenizer):
    tok = xlm_tokenizer
    rows = [{"translation": {"en": e, "es": s}} for e, s in zip(toy_sentences(EN, 64, 2), toy_sentences(ES, 64, 3))]
    ds = prepare_tlm_dataset(Dataset.from_list(rows), tok, "en", "es", max_length=40)
    assert set(ds.column_names) == {"src_ids", "tgt_ids", "src_lang", "tgt_lang"}
    collator = TLMCollator(tok, {"en": 0, "es": 1}, max_length=40, seed=7)
    specials = torch.tensor(tok.all_special_ids)
    per_lang = {0: 0, 1: 0}
    masked = maskable = 0
    for start in range(0, len(ds), 8):
        batch = collator([ds[i] for i in range(start, start + 8)])
        assert batch["input_ids"].shape[1] <= 40
        predicted = batch["labels"] != -100
        original = torch.where(predicted, batch["labels"], batch["input_ids"])
        assert not torch.isin(original[predicted], specials).any()
        assert not (predicted & (batch["attention_mask"] == 0)).any()
        for lang in per_lang:
            per_lang[lang] += int((predicted & (batch["langs"] == lang)).sum())
        masked += int(predicted.sum())
        maskable += int((batch["attention_mask"].bool() & ~torch.isin(original, specials)).sum())
        replaced = predicted & (batch["input_ids"] == tok.mask_token_id)
        assert int(replaced.sum()) <= int(predicted.sum())
    assert per_lang[0] > 20 and per_lang[1] > 20
    assert 0.1 < masked / maskable < 0.2
    again = collator([ds[i] for i in range(8)])
    assert torch.equal(again["labels"], collator([ds[i] for i in range(8)])["labels"])


def test_tlm_errors_name_the_language_and_row(xlm_tokenizer):
    rows = [{"translation": {"en": "the cat", "es": "el gato"}}, {"translation": {"en": "the dog", "es": None}}]
    with pytest.raises(DataError, match=r"translation row 1: language 'es' missing"):
        prepare_tlm_dataset(Dataset.from_list(rows), xlm_tokenizer, "en", "es")
    collator = TLMCollator(xlm_tokenizer, {"en": 0, "es": 1})
    with pytest.raises(DataError, match=r"unknown language code 'fr'.*\['en', 'es'\]"):
        collator([{"src_ids": [10, 11], "tgt_ids": [12], "src_lang": "en", "tgt_lang": "fr"}])
    with pytest.raises(DataError, match="prepare_tlm_dataset"):
        collator([{"translation": {"en": "the cat", "es": "el gato"}}])


def test_monolingual_chunks_long_texts(xlm_tokenizer):
    ds = prepare_monolingual_dataset(Dataset.from_dict({"text": [" ".join(EN * 4)]}), xlm_tokenizer, "fr", max_length=16)
    assert len(ds) > 1 and all(len(x) <= 14 for x in ds["src_ids"])
    assert set(ds["src_lang"]) == {"fr"} and ds["tgt_ids"][0] == []
    assert sum(len(x) for x in ds["src_ids"]) == len(xlm_tokenizer(" ".join(EN * 4), add_special_tokens=False)["input_ids"])


def test_xlm_task_matches_hf_loss_with_langs_and_positions(xlm_tokenizer):
    tok = xlm_tokenizer
    rows = [{"translation": {"en": e, "es": s}} for e, s in zip(toy_sentences(EN, 6, 4), toy_sentences(ES, 6, 5))]
    pairs = prepare_tlm_dataset(Dataset.from_list(rows), tok, "en", "es")
    batch = TLMCollator(tok, {"en": 0, "es": 1}, mlm_probability=0.3)([pairs[i] for i in range(6)])
    torch.manual_seed(0)
    config = XLMConfig(
        vocab_size=len(tok), emb_dim=32, n_layers=2, n_heads=2, n_langs=2, use_lang_emb=True,
        lang2id={"en": 0, "es": 1}, id2lang={0: "en", 1: "es"},
        pad_index=tok.pad_token_id, eos_index=tok.eos_token_id, bos_index=tok.bos_token_id,
        unk_index=tok.unk_token_id, mask_index=tok.mask_token_id, mask_token_id=tok.mask_token_id,
    )
    model = XLMWithLMHeadModel(config).eval()
    task = XLMMaskedLMTask(model)
    with torch.no_grad():
        result = task(**batch)
        hf = model(**batch).loss
        other_langs = task(**{**batch, "langs": 1 - batch["langs"]})
    loss, count = result["losses"]["loss"]
    assert int(count) == int((batch["labels"] != -100).sum()) == int(task.count_items(batch)["loss"]) > 0
    assert (loss / count).item() == pytest.approx(hf.item(), rel=1e-5)
    assert other_langs["losses"]["loss"][0].item() != pytest.approx(loss.item(), rel=1e-6)  # langs reach the model


# --- Built-in corpora (Debian packages) ---------------------------------------------------------


@pytest.mark.slow
def test_sword_pairs_align_kjv_with_reina_valera(tmp_path):
    from nlp_ssl.data.parallel import load_sword_pairs

    pairs = load_sword_pairs(tmp_path)
    assert 31_000 <= len(pairs) <= 31_102
    assert pairs[0]["ref"] == "Genesis 1:1"
    assert pairs[0]["translation"] == {
        "en": "In the beginning God created the heaven and the earth.",
        "es": "En el principio crió Dios los cielos y la tierra.",
    }
    sample = " ".join(t["en"] + t["es"] for t in pairs.select(range(0, len(pairs), 50))["translation"])
    assert not any(mark in sample for mark in ("<", "\\", "¶", "$$$"))
