"""Write the offline "same topic?" sentence-pair task (``nlp_ssl.data.wiki_pairs``): GLUE's classic
layout for the GLUE harness, and jsonl for ``recipes/finetune_text.py``.

    python data_scripts/prepare_wiki_pairs.py --out data/wiki_pairs [--train 4000 --test 1000 --seed 0]
    python recipes/glue.py model.name_or_path=outputs/pretrain_mlm glue.data_dir=data/wiki_pairs glue.tasks=[wikipairs]
    python recipes/finetune_text.py model.name_or_path=outputs/pretrain_mlm data.train_file=data/wiki_pairs/train.jsonl \\
        data.test_file=data/wiki_pairs/test.jsonl data.text_pair_column=text_pair data.k_per_class=null

Training pairs come from the built-in corpus's English training articles, test (dev) pairs from its
held-out test articles. It is not GLUE: with Hub access, ``glue.data_dir=nyu-mll/glue`` runs the real tasks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nlp_ssl import atomic
from nlp_ssl.data.wiki import load_wiki_corpus
from nlp_ssl.data.wiki_pairs import LABELS, topic_pairs


def _cell(text: str) -> str:
    return " ".join(text.split())  # the classic layout is tab-separated, unquoted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for WikiPairs/{train,dev}.tsv and {train,test}.jsonl")
    parser.add_argument("--train", type=int, default=4000, help="training pairs")
    parser.add_argument("--test", type=int, default=1000, help="test (dev) pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_dir", default=None)
    args = parser.parse_args(argv)
    corpus = load_wiki_corpus(args.cache_dir)
    out = Path(args.out)
    (out / "WikiPairs").mkdir(parents=True, exist_ok=True)
    for split, stem, source, n in (("train", "train", "en_train", args.train), ("test", "dev", "en_test", args.test)):
        pairs = topic_pairs(corpus[source], n, args.seed)
        lines = [json.dumps({"text": r["text"], "text_pair": r["text_pair"], "label": LABELS[r["label"]]}) for r in pairs]
        atomic.write_text(out / f"{split}.jsonl", "\n".join(lines) + "\n")
        rows = ["sentence1\tsentence2\tlabel"] + [f"{_cell(r['text'])}\t{_cell(r['text_pair'])}\t{r['label']}" for r in pairs]
        atomic.write_text(out / "WikiPairs" / f"{stem}.tsv", "\n".join(rows) + "\n")
        print(f"{n} {split} pairs -> {out / f'{split}.jsonl'} and {out / 'WikiPairs' / f'{stem}.tsv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
