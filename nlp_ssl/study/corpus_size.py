"""What unlabelled text buys: pretraining from scratch on growing corpora, gain over scratch at each size.

A corpus is named ``wiki:<fraction>`` (a seeded random share of the built-in corpus's training
articles; the shares are nested, so 10% is inside 30%) joined by ``+`` to the other English texts the
project has offline: ``kjv`` (the King James Bible, by chapter) and ``python_docs`` (the Python 3.11
documentation, by page). None of them holds a test article of the topic task. Each corpus is written
once as a jsonl file; its pretraining run and its fine-tuning study are the text study's.
``curve`` gathers the per-corpus studies into one table and one figure: gain over scratch against
the unlabelled tokens, with other studies' methods (a public checkpoint) as reference lines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from nlp_ssl.atomic import write_bytes, write_text
from nlp_ssl.errors import ConfigError
from nlp_ssl.study.report import cell

OTHER_TEXTS = ("kjv", "python_docs")


def parse_corpus(name: str) -> tuple[float, list[str]]:
    """``wiki:0.3+kjv`` -> (0.3, ["kjv"]); the wiki share comes first."""
    head, *others = name.split("+")
    if not head.startswith("wiki:"):
        raise ConfigError(f"corpora: {name!r} must start with wiki:<fraction>, e.g. wiki:0.1 or wiki:1.0+kjv")
    try:
        fraction = float(head[len("wiki:"):])
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise ConfigError(f"corpora: {name!r}: the wiki fraction must be in (0, 1]")
    unknown = [o for o in others if o not in OTHER_TEXTS]
    if unknown:
        raise ConfigError(f"corpora: {name!r}: {unknown[0]!r} is not one of {list(OTHER_TEXTS)}")
    return fraction, others


def folder_name(name: str) -> str:
    return name.replace(":", "").replace("+", "_")


def corpus_texts(name: str, seed: int, cache_dir: str | None = None) -> list[str]:
    """The texts of corpus ``name``: the first ``fraction`` of one seeded order of the training articles, then the others."""
    from nlp_ssl.data.documents import SENTENCE_CORPORA, document_texts
    from nlp_ssl.data.wiki import load_wiki_corpus

    fraction, others = parse_corpus(name)
    wiki = load_wiki_corpus(cache_dir)["en_train"]["text"][:]
    order = np.random.default_rng(seed).permutation(len(wiki))
    texts = [wiki[i] for i in order[: math.ceil(fraction * len(wiki))]]
    for other in others:
        texts += [t for t in document_texts(SENTENCE_CORPORA[other](cache_dir), "sentences")["text"] if t.strip()]
    return texts


def write_corpus(name: str, folder: Path, seed: int, cache_dir: str | None = None) -> Path:
    """``folder/<name>.jsonl`` with one ``{"text": ...}`` per document (written once)."""
    path = Path(folder) / f"{folder_name(name)}.jsonl"
    if not path.is_file():
        texts = corpus_texts(name, seed, cache_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    return path


def count_tokens(path: Path, tokenizer_folder: Path) -> tuple[int, int]:
    """(documents, tokens) of a corpus file, in the tokenizer its model was pretrained with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    tokenizer.model_max_length = 1 << 40  # counting, not feeding a model: no warning about long documents
    texts = [json.loads(line)["text"] for line in Path(path).read_text(encoding="utf-8").splitlines()]
    tokens = sum(len(ids) for start in range(0, len(texts), 1000)
                 for ids in tokenizer(texts[start:start + 1000], add_special_tokens=False)["input_ids"])
    return len(texts), tokens


def curve_rows(points: list[dict], k: int, budgets: list[int]) -> list[dict]:
    """One row per budget and corpus: its size, scratch, pretrained and the gain (per seed, mean ± std) at ``k``."""
    rows = []
    for steps in budgets:
        method = f"pretrained_{steps}"
        for p in points:
            summary, gains = p["results"]["summary"], p["results"]["gains"]
            gain = gains.get(method, {}).get(str(k))
            if not gain:
                continue
            rows.append({
                "corpus": p["corpus"], "steps": steps, "documents": p["documents"], "tokens": p["tokens"],
                "scratch": summary["scratch"][str(k)]["test_accuracy"],
                "pretrained": summary[method][str(k)]["test_accuracy"],
                "gain": {key: gain[key] for key in ("mean", "std", "min", "n", "per_seed")},
            })
    return rows


def references(paths: list[str], k: int) -> dict[str, dict]:
    """Other studies' methods at ``k`` (label -> test accuracy mean/std): lines on the figure."""
    out = {}
    for path in paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        for method, by_k in results["summary"].items():
            if str(k) in by_k:
                out[results.get("labels", {}).get(method, method)] = by_k[str(k)]["test_accuracy"]
    return out


def markdown(rows: list[dict], refs: dict[str, dict], k: int, seeds: list[int], settings: list[str]) -> str:
    lines = [
        "# Pretraining from scratch: gain over scratch against unlabelled tokens", "",
        f"Test accuracy % on the built-in topic task at k={k} labels per class, mean ± std over seeds {seeds}; "
        "gain = pretrained minus scratch on the same seed (same labels, same tokenizer).", "",
        "| corpus | documents | tokens | pretraining steps | scratch | pretrained | gain (points) | min gain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        g = r["gain"]
        lines.append(f"| {r['corpus']} | {r['documents']:,} | {r['tokens']:,} | {r['steps']:,} | {cell(r['scratch'])} "
                     f"| {cell(r['pretrained'])} | {cell(g, signed=True)} | {100 * g['min']:+.1f} |")
    if refs:
        lines += ["", "Reference rows (other studies, same task, same k, same seeds):", ""]
        lines += [f"- {label}: {cell(stats)}" for label, stats in refs.items()]
    lines += ["", "## Settings", "", *settings, "", "![gain vs tokens](gain_vs_tokens.png)", ""]
    return "\n".join(lines)


def plot(rows: list[dict], refs: dict[str, dict], k: int, path: Path) -> None:
    """Left: gain over scratch against tokens (log axis). Right: accuracies, with the reference lines."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    budgets = list(dict.fromkeys(r["steps"] for r in rows))
    for steps in budgets:
        series = [r for r in rows if r["steps"] == steps]
        tokens = [r["tokens"] for r in series]
        left.errorbar(tokens, [100 * r["gain"]["mean"] for r in series], yerr=[100 * r["gain"]["std"] for r in series],
                      marker="o", capsize=3, label=f"{steps:,} pretraining steps")
        right.errorbar(tokens, [100 * r["pretrained"]["mean"] for r in series],
                       yerr=[100 * r["pretrained"]["std"] for r in series], marker="o", capsize=3,
                       label=f"pretrained, {steps:,} steps")
    # Scratch and the corpus's name once per corpus (its first row), whichever budgets have run on it.
    first = {}
    for r in rows:
        first.setdefault(r["corpus"], r)
    first = sorted(first.values(), key=lambda r: r["tokens"])
    for r in first:
        left.annotate(r["corpus"], (r["tokens"], 100 * r["gain"]["mean"]), fontsize=7, xytext=(4, -10),
                      textcoords="offset points")
    right.errorbar([r["tokens"] for r in first], [100 * r["scratch"]["mean"] for r in first],
                   yerr=[100 * r["scratch"]["std"] for r in first], marker="o", capsize=3, color="grey",
                   label="no pretraining (same tokenizer)")
    left.axhline(0, color="grey", linewidth=1)
    left.set_ylabel("gain over scratch (points)")
    left.set_title(f"pretraining from scratch, then fine-tuning (k={k})", fontsize=10)
    left.legend(fontsize=7)
    for (label, stats), style in zip(refs.items(), ("--", ":", "-.", (0, (5, 1)))):
        right.axhline(100 * stats["mean"], linestyle=style, color="black", linewidth=1, label=label)
    right.set_ylabel("test accuracy (%)")
    right.set_title("test accuracy", fontsize=10)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("unlabelled tokens in the pretraining corpus")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
