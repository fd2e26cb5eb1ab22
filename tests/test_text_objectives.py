"""CLM, NSP/SOP and TLM collators, their losses against the HF models' own, and the text corpora."""

import random
import shutil

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForPreTraining,
    GPT2Config,
    GPT2LMHeadModel,
    XLMConfig,
    XLMWithLMHeadModel,
)

from nlp_ssl.data.documents import rst_to_paragraphs, split_sentences
from nlp_ssl.data.text import tokenize_and_pack
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.clm import CLMCollator, document_position_ids
from nlp_ssl.objectives.nsp import NSPCollator, build_nsp_dataset, create_nsp_examples, truncate_seq_pair
from nlp_ssl.objectives.tlm import TLMCollator, prepare_monolingual_dataset, prepare_tlm_dataset
from nlp_ssl.tasks.bert_pretraining import BertPretrainingTask
from nlp_ssl.tasks.causal_lm import CausalLMTask
from nlp_ssl.tasks.xlm import XLMMaskedLMTask
from nlp_ssl.tokenization import train_tokenizer
from tests.helpers import toy_texts

EN = "the cat sat on a mat while two dogs ran across green fields under the bright morning sun".split()
ES = "el gato se sentó en una alfombra mientras dos perros corrían por campos verdes bajo el sol".split()


def toy_sentences(words, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory):
    return train_tokenizer("bytelevel_bpe", toy_texts(300), 300, tmp_path_factory.mktemp("tok") / "bytelevel")


@pytest.fixture(scope="module")
def xlm_tokenizer(tmp_path_factory):
    texts = toy_sentences(EN, 300, 0) + toy_sentences(ES, 300, 1)
    return train_tokenizer("bpe", texts, 200, tmp_path_factory.mktemp("tok") / "bpe")


# --- CLM ----------------------------------------------------------------------------------------


def tiny_gpt2(tokenizer, attn="sdpa"):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    model.set_attn_implementation(attn)
    return model


def test_clm_plain_labels_are_inputs_with_pads_ignored(gpt2_tokenizer):
    tok = gpt2_tokenizer
    eos = tok.eos_token_id
    batch = CLMCollator(tok)([{"input_ids": [5, 6, eos, 7]}, {"input_ids": [8, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, eos, 7], [8, 9, tok.pad_token_id, tok.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, eos, 7], [8, 9, -100, -100]]
    assert "position_ids" not in batch


def test_clm_document_aware_positions_restart_after_each_eos(gpt2_tokenizer):
    tok = gpt2_tokenizer
    eos = tok.eos_token_id
    batch = CLMCollator(tok, document_aware=True, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, eos, 7, 8, eos, eos, 9]}, {"input_ids": [eos, 5, 6]}]
    )
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]]
    # EOS is predicted within its document; each later document's first token is not predicted.
    assert batch["labels"].tolist() == [[-100, 6, eos, -100, 8, eos, -100, -100], [-100, -100, 6] + [-100] * 5]
    assert "attention_mask" not in batch


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_clm_document_aware_logits_equal_each_document_run_alone(gpt2_tokenizer, attn):
    tok = gpt2_tokenizer
    docs = Dataset.from_dict({"text": toy_texts(12, seed=3)})
    blocks = tokenize_and_pack(docs, tok, "text", 48)
    examples = [blocks[i] for i in range(3)]
    model = tiny_gpt2(tok, attn)
    aware = CLMCollator(tok, document_aware=True)(examples)
    plain = CLMCollator(tok)(examples)
    task = CausalLMTask(model)
    with torch.no_grad():
        logits = model(input_ids=aware["input_ids"], position_ids=aware["position_ids"], use_cache=False).logits
        plain_logits = model(**{k: v for k, v in plain.items() if k != "labels"}).logits
        out = task(**aware)
    expected_sum, expected_count, n_docs = 0.0, 0, 0
    for row in range(len(examples)):
        starts = (aware["position_ids"][row] == 0).nonzero().squeeze(1).tolist() + [aware["input_ids"].shape[1]]
        n_docs += len(starts) - 1
        for start, end in zip(starts[:-1], starts[1:]):
            ids = aware["input_ids"][row : row + 1, start:end]
            with torch.no_grad():
                alone = model(input_ids=ids)
            torch.testing.assert_close(logits[row, start:end], alone.logits[0], atol=1e-5, rtol=1e-4)
            if end - start > 1:
                expected_sum += model(input_ids=ids, labels=ids).loss.item() * (end - start - 1)
                expected_count += end - start - 1
    assert n_docs > len(examples)  # the blocks really hold several documents
    # Without document awareness, a later document sees the earlier one, and its logits change.
    assert not torch.allclose(plain_logits, logits, atol=1e-3)
    loss, count = out["losses"]["loss"]
    assert int(count) == expected_count == int(task.count_items(aware)["loss"])
    assert loss.item() == pytest.approx(expected_sum, rel=1e-4)


def test_document_position_ids_ignore_separators_in_padding():
    ids = torch.tensor([[4, 1, 4, 1, 1, 1]])
    assert document_position_ids(ids, torch.tensor([3]), separator_id=1).tolist() == [[0, 1, 0, 0, 0, 0]]


def test_causal_lm_task_matches_gpt2_loss_with_padding(gpt2_tokenizer):
    model = tiny_gpt2(gpt2_tokenizer)
    batch = CLMCollator(gpt2_tokenizer)([{"input_ids": list(range(5, 25))}, {"input_ids": list(range(30, 41))}])
    task = CausalLMTask(model)
    with torch.no_grad():
        out = task(**batch)
        hf = model(**batch).loss
    loss, count = out["losses"]["loss"]
    assert int(count) == 19 + 10 == int(task.count_items(batch)["loss"])
    assert (loss / count).item() == pytest.approx(hf.item(), rel=1e-5)
    correct, total = out["metrics"]["accuracy"]
    assert 0 <= int(correct) <= int(total) == int(count)


# --- NSP / SOP ----------------------------------------------------------------------------------


def numbered_documents(n_docs=40, seed=0, min_sentences=2, max_sentences=12):
    """Documents whose token ids increase through the corpus: ids tell the document and the order."""
    rng = random.Random(seed)
    docs, next_id, owner = [], 10, {}
    for d in range(n_docs):
        doc = []
        for _ in range(rng.randint(min_sentences, max_sentences)):
            sentence = list(range(next_id, next_id + rng.randint(3, 20)))
            owner.update({t: d for t in sentence})
            next_id += len(sentence)
            doc.append(sentence)
        docs.append(doc)
    return docs, owner


def split_pair(input_ids, token_type_ids, cls=1, sep=2):
    assert input_ids[0] == cls and input_ids[-1] == sep
    n_a = token_type_ids.count(0) - 2
    assert token_type_ids == [0] * (n_a + 2) + [1] * (len(input_ids) - n_a - 2)
    assert input_ids[n_a + 1] == sep
    return input_ids[1 : n_a + 1], input_ids[n_a + 2 : -1]


def test_nsp_pairs_are_framed_fit_and_take_random_b_from_another_document():
    docs, owner = numbered_documents()
    out = create_nsp_examples(
        docs, 32, cls_token_id=1, sep_token_id=2, short_seq_prob=0.3, dupe_factor=3, seed=1, track_documents=True
    )
    assert set(out["next_sentence_label"]) == {0, 1}
    for ids, types, label, a_doc, b_doc in zip(
        *(out[k] for k in ("input_ids", "token_type_ids", "next_sentence_label", "a_document", "b_document"))
    ):
        assert len(ids) <= 32
        a, b = split_pair(ids, types)
        assert a and b
        assert {owner[t] for t in a} == {a_doc} and {owner[t] for t in b} == {b_doc}
        if label == 1:
            assert b_doc != a_doc
        else:
            assert b_doc == a_doc and max(a) < min(b)  # B is what follows A
    # Trimming takes tokens from both ends: some A's do not start at a sentence start.
    starts = {s[0] for doc in docs for s in doc}
    assert any(split_pair(i, t)[0][0] not in starts for i, t in zip(out["input_ids"], out["token_type_ids"]))


def test_nsp_puts_sentences_unused_by_a_random_b_back():
    docs, owner = numbered_documents(n_docs=20)
    out = create_nsp_examples(docs, 4096, cls_token_id=1, sep_token_id=2, short_seq_prob=0.0, seed=2)
    own_doc_tokens = set()
    for ids, types, label in zip(out["input_ids"], out["token_type_ids"], out["next_sentence_label"]):
        a, b = split_pair(ids, types)
        own_doc_tokens.update(a if label else a + b)
    assert 1 in out["next_sentence_label"]
    assert own_doc_tokens == set(owner)  # every sentence is read as its own document's text at least once


def test_nsp_labels_are_near_half_random_on_long_documents():
    docs, _ = numbered_documents(n_docs=60, min_sentences=20, max_sentences=30)
    labels = np.array(create_nsp_examples(docs, 128, cls_token_id=1, sep_token_id=2, dupe_factor=3)["next_sentence_label"])
    # Above 0.5 only by BERT's rule that a lone last sentence of a document always gets a random B.
    assert len(labels) > 500 and 0.45 < labels.mean() < 0.6


def test_nsp_is_seeded_and_dupe_factor_adds_passes():
    docs, _ = numbered_documents()
    one = create_nsp_examples(docs, 64, cls_token_id=1, sep_token_id=2, seed=3)
    again = create_nsp_examples(docs, 64, cls_token_id=1, sep_token_id=2, seed=3)
    other = create_nsp_examples(docs, 64, cls_token_id=1, sep_token_id=2, seed=4)
    three = create_nsp_examples(docs, 64, cls_token_id=1, sep_token_id=2, seed=3, dupe_factor=3)
    assert one == again and one["input_ids"] != other["input_ids"]
    assert 2.5 * len(one["input_ids"]) < len(three["input_ids"]) < 3.5 * len(one["input_ids"])


def test_nsp_short_seq_prob_makes_short_examples():
    docs, _ = numbered_documents(min_sentences=20, max_sentences=30)

    def lengths(p):
        return [len(x) for x in create_nsp_examples(docs, 128, cls_token_id=1, sep_token_id=2, short_seq_prob=p)["input_ids"]]

    assert np.median(lengths(0.0)) == 128  # the target is max_seq_length - 3; only document ends are shorter
    assert np.median(lengths(1.0)) < 90  # targets uniform in [2, 125]


def test_sop_label_one_means_a_and_b_swapped():
    docs, owner = numbered_documents(seed=5)
    out = create_nsp_examples(docs, 40, cls_token_id=1, sep_token_id=2, dupe_factor=2, seed=0, sop=True, track_documents=True)
    labels = np.array(out["next_sentence_label"])
    assert 0.4 < labels.mean() < 0.6
    for ids, types, label in zip(out["input_ids"], out["token_type_ids"], out["next_sentence_label"]):
        a, b = split_pair(ids, types)
        assert len({owner[t] for t in a + b}) == 1  # never a random B
        assert (label == 1) == (min(a) > max(b))
    assert out["a_document"] == out["b_document"]


def test_truncate_seq_pair_trims_the_longer_side_from_both_ends():
    rng = random.Random(0)
    seen_front = seen_back = False
    for _ in range(20):
        a, b = list(range(100, 120)), [1, 2, 3]
        truncate_seq_pair(a, b, 10, rng)
        assert len(a) + len(b) == 10 and b == [1, 2, 3]
        seen_front |= a[0] != 100
        seen_back |= a[-1] != 119
    assert seen_front and seen_back


def test_nsp_corpus_without_multi_sentence_documents_is_an_error():
    with pytest.raises(DataError, match="more than one sentence"):
        create_nsp_examples([[[5, 6]], [[7, 8, 9]], [[10]]], 32, cls_token_id=1, sep_token_id=2)
    with pytest.raises(DataError, match="at least 2"):
        create_nsp_examples([[[5, 6], [7, 8]]], 32, cls_token_id=1, sep_token_id=2)


def test_build_nsp_dataset_from_texts_and_collate_with_masking(wordpiece_tokenizer, tmp_path):
    tok = wordpiece_tokenizer
    texts = [". ".join(t.rstrip(".").split(" the ")).capitalize() for t in toy_texts(60, seed=4)]
    docs = Dataset.from_dict({"text": [" ".join(s.capitalize() + "." for s in t.split(". ")) for t in texts]})
    docs.save_to_disk(str(tmp_path / "docs"))
    docs = Dataset.load_from_disk(str(tmp_path / "docs"))
    ds = build_nsp_dataset(docs, tok, column="text", max_seq_length=48, dupe_factor=2, cache_dir=tmp_path / "cache")
    assert set(ds.column_names) == {"input_ids", "token_type_ids", "next_sentence_label"}
    assert max(len(x) for x in ds["input_ids"]) <= 48 and len(ds) > 60
    assert all(x[0] == tok.cls_token_id and x[-1] == tok.sep_token_id for x in ds["input_ids"])
    assert ds.cache_files  # saved under the cache, so the second build is a load
    again = build_nsp_dataset(docs, tok, column="text", max_seq_length=48, dupe_factor=2, cache_dir=tmp_path / "cache")
    assert again.cache_files[0]["filename"] == ds.cache_files[0]["filename"] and again["input_ids"] == ds["input_ids"]

    collator = NSPCollator(tok, seed=0)
    specials = torch.tensor(tok.all_special_ids)
    masked_total = maskable_total = 0
    for start in range(0, len(ds), 16):
        examples = [ds[i] for i in range(start, min(start + 16, len(ds)))]
        batch = collator(examples)
        assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in examples]
        width = batch["input_ids"].shape[1]
        assert batch["token_type_ids"].tolist() == [
            e["token_type_ids"] + [0] * (width - len(e["token_type_ids"])) for e in examples
        ]
        predicted = batch["labels"] != -100
        original = torch.where(predicted, batch["labels"], batch["input_ids"])
        assert not torch.isin(original[predicted], specials).any()
        masked_total += int(predicted.sum())
        maskable_total += int((batch["attention_mask"].bool() & ~torch.isin(original, specials)).sum())
    assert 0.1 < masked_total / maskable_total < 0.2
    with pytest.raises(DataError, match="next_sentence_label"):
        collator([{"input_ids": [1, 5, 2], "token_type_ids": [0, 0, 0]}])


def test_bert_pretraining_task_matches_hf_loss(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    docs, _ = numbered_documents(n_docs=10)
    docs = [[[t % 100 + 10 for t in s] for s in doc] for doc in docs]
    out = create_nsp_examples(docs, 32, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id)
    examples = [{k: out[k][i] for k in out} for i in range(8)]
    batch = NSPCollator(tok, mlm_probability=0.3)(examples)
    torch.manual_seed(0)
    model = BertForPreTraining(
        BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=64)
    ).eval()
    task = BertPretrainingTask(model)
    with torch.no_grad():
        result = task(**batch)
        hf = model(**batch).loss
    (mlm, n_mlm), (nsp, n_nsp) = result["losses"]["mlm"], result["losses"]["nsp"]
    counts = task.count_items(batch)
    assert int(n_mlm) == int((batch["labels"] != -100).sum()) == int(counts["mlm"]) > 0
    assert int(n_nsp) == 8 == int(counts["nsp"])
    assert (mlm / n_mlm + nsp / n_nsp).item() == pytest.approx(hf.item(), rel=1e-5)
    assert set(result["metrics"]) == {"mlm_accuracy", "nsp_accuracy"}


def test_split_sentences_keeps_abbreviations_and_initials():
    text = "Dr. Smith met J. R. Tolkien at 5 p.m. in London. It rained, e.g. all day! Did it stop? Yes.\n\nNew paragraph"
    assert split_sentences(text) == [
        "Dr. Smith met J. R. Tolkien at 5 p.m. in London.",
        "It rained, e.g. all day!",
        "Did it stop?",
        "Yes.",
        "New paragraph",
    ]


def test_rst_to_paragraphs_keeps_prose_and_drops_code_headings_and_directives():
    rst = """.. _label:

Title here
==========

The :keyword:`for` statement uses ``iter()`` and :func:`~os.path.join`.  See
`the docs <https://x.org>`_ for **more**::

   for x in y:
       pass

.. function:: spam(eggs)
   :noindex:

   Return *spam* from the given eggs, as a new list.

.. code-block:: python

   print("not prose at all, no sir")

.. note this is a comment with several words

* A list item with several words.
"""
    assert rst_to_paragraphs(rst) == [
        "The for statement uses iter() and join. See the docs for more:",
        "Return spam from the given eggs, as a new list.",
        "A list item with several words.",
    ]


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


@pytest.mark.slow
def test_kjv_chapters_and_python_docs_give_balanced_nsp(tmp_path, wordpiece_tokenizer):
    from nlp_ssl.data.documents import load_kjv_chapters, load_python_docs

    chapters = load_kjv_chapters(tmp_path)
    assert len(chapters) == 1189 and chapters[0]["title"] == "Genesis 1" and len(chapters[0]["sentences"]) == 31
    docs = load_python_docs(tmp_path)
    assert len(docs) > 400 and sum(len(s) for s in docs["sentences"]) > 30_000
    ds = build_nsp_dataset(chapters, wordpiece_tokenizer, max_seq_length=128, cache_dir=tmp_path)
    labels = np.array(ds["next_sentence_label"])
    assert 0.45 < labels.mean() < 0.62  # BERT's recipe: a lone last sentence always gets a random B
    assert max(len(x) for x in ds["input_ids"]) <= 128


def test_missing_debian_package_is_named(monkeypatch, tmp_path):
    from nlp_ssl.data import parallel
    from nlp_ssl.data.documents import build_python_docs

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="libsword-utils"):
        parallel.export_sword_module("engKJV2006eb")
    monkeypatch.setattr(parallel, "_sword_dirs", lambda: [tmp_path])
    with pytest.raises(DataError, match="sword-text-sparv"):
        parallel.find_sword_module(parallel.SWORD_TEXTS["es"])
    with pytest.raises(DataError, match="python3.11-doc"):
        build_python_docs(tmp_path, source_dir=tmp_path / "nowhere")
