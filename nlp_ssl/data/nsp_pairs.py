"""The sentence pairs of next sentence prediction (BERT) and sentence order prediction (ALBERT).

Examples are built offline the way BERT's ``create_pretraining_data.py`` builds them, because NSP
needs the whole corpus at once (a random B comes from another document):

- per document and per pass (``dupe_factor`` passes), a target length: ``max_seq_length - 3``, or
  with probability ``short_seq_prob`` a random length in ``[2, max_seq_length - 3]``, so the model
  also sees short sequences;
- sentences accumulate until the target is reached (or the document ends); A is the first
  ``randint(1, n - 1)`` of them;
- NSP: with probability 0.5 (always when only one sentence accumulated), B is a random run of
  sentences from a *different* document, label 1, and the unused sentences go back to be read
  again; otherwise B is the rest of the accumulated sentences, label 0;
- the pair is trimmed, longest side first, one token at a time from the front or the back at
  random, to fit ``[CLS] A [SEP] B [SEP]`` in ``max_seq_length``;
- the examples of all passes are shuffled.

Labels follow ``BertForPreTraining``: ``next_sentence_label`` 0 = B continues A, 1 = B is random.
Two choices differ from BERT's script: the other document is drawn from the other documents (BERT
retries 10 times and can, rarely, pick the same one), and SOP never uses a random B: a chunk is
closed only once it holds two sentences, B is always the true continuation, and A and B are
swapped with probability 0.5 (label 1 = swapped). ALBERT's script pairs a lone sentence with a
random B even for SOP, which mixes a topic signal into a label that should only mean order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, load_from_disk
from datasets.fingerprint import Hasher

from nlp_ssl import atomic
from nlp_ssl.data.cache import cache_root
from nlp_ssl.data.documents import split_sentences
from nlp_ssl.errors import DataError

NSP_VERSION = "v1"


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Trim the longer of the two lists in place, from its front or back at random, until they fit."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _check_documents(documents: Sequence[Sequence[Sequence[int]]]) -> None:
    usable = [doc for doc in documents if len(doc) > 0]
    if len(usable) < 2:
        raise DataError(f"NSP needs at least 2 non-empty documents (a random B comes from another one); got {len(usable)}")
    if not any(len(doc) > 1 for doc in usable):
        raise DataError(
            f"NSP needs documents of several sentences; none of the {len(usable)} documents has more than one "
            "sentence (is each row a whole document, not a sentence or a line?)"
        )


def create_nsp_examples(
    documents: Sequence[Sequence[Sequence[int]]],
    max_seq_length: int,
    *,
    cls_token_id: int,
    sep_token_id: int,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    seed: int = 0,
    sop: bool = False,
    track_documents: bool = False,
) -> dict[str, list]:
    """Columns ``input_ids``, ``token_type_ids``, ``next_sentence_label`` of shuffled NSP (or SOP) pairs.

    ``documents[d][s]`` is the token ids of sentence ``s`` of document ``d`` (no special tokens).
    With ``track_documents``, also ``a_document`` and ``b_document``: the index in ``documents`` of
    the document each segment came from, for checks.
    """
    if max_seq_length < 5:
        raise DataError(f"max_seq_length {max_seq_length} leaves no room for [CLS] A [SEP] B [SEP]")
    if dupe_factor < 1:
        raise DataError(f"dupe_factor must be at least 1, got {dupe_factor}")
    documents = [[list(s) for s in doc if len(s) > 0] for doc in documents]
    _check_documents(documents)
    non_empty = [d for d, doc in enumerate(documents) if doc]
    rng = random.Random(seed)
    max_num_tokens = max_seq_length - 3
    columns = ["input_ids", "token_type_ids", "next_sentence_label"] + (["a_document", "b_document"] if track_documents else [])
    examples: list[tuple] = []
    for _ in range(dupe_factor):
        for position, doc_index in enumerate(non_empty):
            document = documents[doc_index]
            target = max_num_tokens
            if rng.random() < short_seq_prob:
                target = rng.randint(2, max_num_tokens)
            chunk: list[list[int]] = []
            length = 0
            i = 0
            while i < len(document):
                chunk.append(document[i])
                length += len(document[i])
                at_end = i == len(document) - 1
                if at_end or (length >= target and (not sop or len(chunk) >= 2)):
                    if sop and len(chunk) < 2:
                        break  # a lone last sentence has no order to predict
                    a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                    tokens_a = [t for s in chunk[:a_end] for t in s]
                    b_doc = doc_index
                    if sop:
                        tokens_b = [t for s in chunk[a_end:] for t in s]
                        label = int(rng.random() < 0.5)
                        if label:
                            tokens_a, tokens_b = tokens_b, tokens_a
                    elif len(chunk) == 1 or rng.random() < 0.5:
                        label = 1
                        target_b = target - len(tokens_a)
                        other = rng.randrange(len(non_empty) - 1)
                        b_doc = non_empty[other + (other >= position)]
                        random_document = documents[b_doc]
                        tokens_b = []
                        for sentence in random_document[rng.randrange(len(random_document)) :]:
                            tokens_b.extend(sentence)
                            if len(tokens_b) >= target_b:
                                break
                        i -= len(chunk) - a_end  # the unused sentences are read again
                    else:
                        label = 0
                        tokens_b = [t for s in chunk[a_end:] for t in s]
                    truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                    row = (
                        [cls_token_id, *tokens_a, sep_token_id, *tokens_b, sep_token_id],
                        [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1),
                        label,
                    )
                    if track_documents:
                        row += (doc_index, b_doc)
                    examples.append(row)
                    chunk = []
                    length = 0
                i += 1
    rng.shuffle(examples)
    return {name: [row[k] for row in examples] for k, name in enumerate(columns)}


class SentenceTokenizer:
    """Batched ``datasets.map`` function: a document column into ``sentence_ids`` (token ids per sentence).

    A column of strings is split with :func:`nlp_ssl.data.documents.split_sentences`; a column of
    lists of strings is taken as sentences already. Picklable, so ``datasets`` caches the result.
    """

    def __init__(self, tokenizer, column: str):
        self.tokenizer = tokenizer
        self.column = column

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        docs = []
        for index, value in zip(indices, batch[self.column]):
            if value is None:
                raise DataError(f"NSP documents row {index}: field {self.column!r} missing")
            if isinstance(value, str):
                docs.append(split_sentences(value))
            elif isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
                docs.append([" ".join(s.split()) for s in value if s and s.strip()])
            else:
                raise DataError(
                    f"NSP documents row {index}: field {self.column!r} must be a text or a list of sentences, "
                    f"got {type(value).__name__}"
                )
        flat = [s for doc in docs for s in doc]
        ids = self.tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        out, k = [], 0
        for doc in docs:
            out.append([s for s in ids[k : k + len(doc)] if s])
            k += len(doc)
        return {"sentence_ids": out}


def tokenize_documents(docs: Dataset, tokenizer, column: str = "sentences", num_proc: int | None = None) -> Dataset:
    """A ``sentence_ids`` column (list of sentences, each a list of token ids); cached by ``datasets``."""
    if column not in docs.column_names:
        raise DataError(f"NSP documents: no column {column!r} (columns: {', '.join(docs.column_names)})")
    return docs.map(
        SentenceTokenizer(tokenizer, column),
        batched=True,
        with_indices=True,
        remove_columns=docs.column_names,
        num_proc=num_proc,
        desc="Splitting and tokenizing sentences",
    )


def build_nsp_dataset(
    docs: Dataset,
    tokenizer,
    column: str = "sentences",
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    seed: int = 0,
    sop: bool = False,
    num_proc: int | None = None,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """NSP (or SOP) pairs from a dataset of documents, cached under ``cache_root()/nsp`` when ``docs`` is on disk.

    ``column`` holds each document as a text (split into sentences here) or a list of sentences
    (``nlp_ssl.data.documents.load_python_docs()``, ``load_kjv_chapters()``).
    """
    for name in ("cls_token_id", "sep_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise DataError(f"tokenizer {tokenizer.name_or_path!r} has no {name[:-3]}; NSP needs [CLS] and [SEP]")
    tokenized = tokenize_documents(docs, tokenizer, column, num_proc)
    params = (tokenized._fingerprint, max_seq_length, short_seq_prob, dupe_factor, seed, sop)
    params += (tokenizer.cls_token_id, tokenizer.sep_token_id)
    final = cache_root(cache_dir) / "nsp" / f"{NSP_VERSION}-{Hasher.hash(params)}"
    cacheable = bool(docs.cache_files)
    if cacheable and (final / "dataset_info.json").is_file():
        return load_from_disk(str(final))
    examples = create_nsp_examples(
        tokenized["sentence_ids"],
        max_seq_length,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        short_seq_prob=short_seq_prob,
        dupe_factor=dupe_factor,
        seed=seed,
        sop=sop,
    )
    dataset = Dataset.from_dict(examples)
    if not cacheable:
        return dataset
    tmp = atomic.staging_dir(final)
    dataset.save_to_disk(str(tmp))
    atomic.publish_cache_dir(tmp, final, "dataset_info.json")
    return load_from_disk(str(final))
