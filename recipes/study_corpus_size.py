"""What unlabelled text buys: pretrain from scratch on growing corpora, fine-tune on k labels, gain over scratch.

    python recipes/study_corpus_size.py [corpora=[wiki:0.1,wiki:0.3,wiki:1.0,wiki:1.0+kjv+python_docs]] \\
        [k_per_class=[32]] [seeds=[0,1,2]] [pretrain_args=[max_steps=1200]] [reference_studies=[<results.json>]]

For each corpus (a seeded share of the built-in corpus's training articles, plus the project's
other English texts): one ``recipes/pretrain_mlm.py`` run on it (its own tokenizer, the same number
of steps for every corpus), then fine-tuning at each k and seed from that checkpoint and from the same
architecture with fresh weights, on the built-in topic task. Writes ``<corpus>/`` (each a text
study's files), ``curve.json``, ``curve.md`` and ``gain_vs_tokens.png``; ``reference_studies`` (other
studies' results.json, e.g. a public checkpoint fine-tuned) are drawn as lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from nlp_ssl.atomic import write_json, write_text
from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.finetune_text import FinetuneTextConfig
from nlp_ssl.study import Method, Study, StudyConfig, corpus_size, run_study
from nlp_ssl.study.grid import check_arguments
from nlp_ssl.study.pretraining import pretrain_step, section


@dataclass
class StudyCorpusSizeConfig(StudyConfig):
    output_dir: str = "results/corpus_size"
    k_per_class: list[int] = field(default_factory=lambda: [32])
    methods: list[str] = field(default_factory=lambda: ["scratch", "pretrained"])
    #: Pretraining corpora, smallest first: ``wiki:<fraction>`` joined by ``+`` to ``kjv``, ``python_docs``.
    corpora: list[str] = field(default_factory=lambda: ["wiki:0.1", "wiki:0.3", "wiki:1.0", "wiki:1.0+kjv+python_docs"])
    #: Seed of the order the wiki shares are drawn in (fixed, so the shares are nested).
    corpus_seed: int = 0
    #: Arguments of every pretraining run: recipes/pretrain_mlm.py defaults plus these.
    pretrain_args: list[str] = field(default_factory=list)
    #: Other studies' results.json whose methods (at the same k) are drawn as reference lines.
    reference_studies: list[str] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        check_arguments("pretrain_args", self.pretrain_args)
        for name in self.corpora:
            corpus_size.parse_corpus(name)


def main(argv=None):
    cfg = parse_config(StudyCorpusSizeConfig, argv,
                       default_yaml=Path(__file__).parent / "configs" / "study_corpus_size.yaml")
    out = Path(cfg.output_dir)
    points = []
    for name in cfg.corpora:
        where = out / corpus_size.folder_name(name)
        corpus = corpus_size.write_corpus(name, out / "data", cfg.corpus_seed)
        checkpoint = where / "pretrain" / "scratch"
        step = pretrain_step(f"pretrained on {name}", "pretrain_mlm", [f"data.train_file={corpus}", *cfg.pretrain_args],
                             checkpoint, cfg.reuse)
        start = [f"model.name_or_path={checkpoint}"]
        methods = {
            "scratch": Method("from scratch (same architecture and tokenizer)", [*start, "model.load_weights=false"]),
            "pretrained": Method(f"pretrained on {name}, fine-tuned", start),
        }
        study = Study(f"Few-label topic classification after pretraining on {name}", "finetune_text",
                      FinetuneTextConfig, methods, sections={"Checkpoint": section([step])}, extra={"pretraining": [step]})
        results = run_study(replace(cfg, output_dir=str(where)), study)
        documents, tokens = corpus_size.count_tokens(corpus, checkpoint)
        points.append({"corpus": name, "documents": documents, "tokens": tokens, "pretraining": step, "results": results})

    rows = {}
    for k in cfg.k_per_class:
        rows[k] = corpus_size.curve_rows(points, k)
        refs = corpus_size.references(cfg.reference_studies, k)
        suffix = "" if len(cfg.k_per_class) == 1 else f"_k{k}"
        settings = [f"- pretraining: `recipes/pretrain_mlm.py data.train_file=<corpus> {' '.join(cfg.pretrain_args)}`",
                    f"- fine-tuning: `recipes/finetune_text.py {' '.join(cfg.finetune_args)}`",
                    f"- corpora drawn with corpus_seed={cfg.corpus_seed}; each corpus's studies are in its folder"]
        write_text(out / f"curve{suffix}.md", corpus_size.markdown(rows[k], refs, k, cfg.seeds, settings))
        corpus_size.plot(rows[k], refs, k, out / f"gain_vs_tokens{suffix}.png")
    write_json(out / "curve.json", {"config": {"corpora": cfg.corpora, "seeds": cfg.seeds, "pretrain_args": cfg.pretrain_args,
                                               "finetune_args": cfg.finetune_args},
                                    "rows": {str(k): r for k, r in rows.items()}})
    print((out / ("curve.md" if len(cfg.k_per_class) == 1 else f"curve_k{cfg.k_per_class[0]}.md")).read_text(encoding="utf-8"))
    return rows


if __name__ == "__main__":
    run(main)
