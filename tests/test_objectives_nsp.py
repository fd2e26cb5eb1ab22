"""NSP/SOP collator and dataset, truncate_seq_pair, the BERT pretraining task, and the document sources they use."""

import random
import shutil

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertForPreTraining

from nlp_ssl.data.documents import rst_to_paragraphs, split_sentences
from nlp_ssl.data.nsp_pairs import build_nsp_dataset, create_nsp_examples, truncate_seq_pair
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.nsp import NSPCollator
from nlp_ssl.tasks.bert_pretraining import BertPretrainingTask
from tests.helpers import toy_texts

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


# --- Built-in corpora (Debian packages) ---------------------------------------------------------


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
