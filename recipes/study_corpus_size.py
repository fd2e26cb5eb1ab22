"""What unlabelled text buys: pretrain from scratch on growing corpora, fine-tune on k labels, gain over scratch.

    python recipes/study_corpus_size.py [corpora=[wiki:0.1,wiki:0.3,wiki:1.0,wiki:1.0+kjv+python_docs]] \\
        [pretrain_steps=[1200,4800]] [k_per_class=[32]] [seeds=[0,1,2]] [reference_studies=[<results.json>]]

For each corpus (a seeded share of the built-in corpus's training articles, plus the project's
other English texts): ``recipes/pretrain_mlm.py`` runs on it for each budget in ``pretrain_steps``
(one tokenizer per corpus, trained on it), then fine-tuning at each k and seed from each checkpoint
(``pretrained_<steps>``) and from the same architecture and tokenizer with fresh weights (``scratch``),
on the built-in topic task. Writes ``<corpus>/`` (each a text study's files), ``curve.json``,
``curve.md`` and ``gain_vs_tokens.png``; ``reference_studies`` (other studies' results.json, e.g. a
public checkpoint fine-tuned) are drawn as lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from nlp_ssl.atomic import write_json, write_text
from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import Method, Study, StudyConfig, corpus_size, provenance, run_study
from nlp_ssl.study.grid import check_arguments
from nlp_ssl.study.pretraining import pretrain_step, section
from nlp_ssl.text.text_finetuning import FinetuneTextConfig


@dataclass
class StudyCorpusSizeConfig(StudyConfig):
    output_dir: str = "results/corpus_size"
    k_per_class: list[int] = field(default_factory=lambda: [32])
    #: Set from ``pretrain_steps``: ``scratch`` and ``pretrained_<steps>`` for each budget.
    methods: list[str] = field(default_factory=list)
    #: Pretraining corpora, smallest first: ``wiki:<fraction>`` joined by ``+`` to ``kjv``, ``python_docs``.
    corpora: list[str] = field(default_factory=lambda: ["wiki:0.1", "wiki:0.3", "wiki:1.0", "wiki:1.0+kjv+python_docs"])
    #: Seed of the order the wiki shares are drawn in (fixed, so the shares are nested).
    corpus_seed: int = 0
    #: Pretraining budgets (optimizer steps); each corpus is pretrained once per budget.
    pretrain_steps: list[int] = field(default_factory=lambda: [1200])
    #: Arguments of every pretraining run: recipes/pretrain_mlm.py defaults plus these (max_steps is pretrain_steps').
    pretrain_args: list[str] = field(default_factory=list)
    #: Other studies' results.json whose methods (at the same k) are drawn as reference lines.
    reference_studies: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.pretrain_steps or min(self.pretrain_steps) <= 0:
            raise ConfigError(f"pretrain_steps: {self.pretrain_steps} must list at least one positive number of steps")
        self.methods = ["scratch", *[f"pretrained_{steps}" for steps in self.pretrain_steps]]
        super().__post_init__()
        check_arguments("pretrain_args", self.pretrain_args)
        for name in self.corpora:
            corpus_size.parse_corpus(name)


def main(argv=None):
    cfg = parse_config(StudyCorpusSizeConfig, argv,
                       default_yaml=Path(__file__).parent / "configs" / "study_corpus_size.yaml")
    out = Path(cfg.output_dir)
    command, points = provenance.command_line(__file__, argv), []
    for name in cfg.corpora:
        where = out / corpus_size.folder_name(name)
        corpus = corpus_size.write_corpus(name, out / "data", cfg.corpus_seed)
        checkpoints = {steps: where / "pretrain" / f"steps{steps}" for steps in cfg.pretrain_steps}
        runs = [pretrain_step(f"{steps} steps on {name}", "pretrain_mlm",
                              [f"data.train_file={corpus}", *cfg.pretrain_args, f"train.max_steps={steps}"], folder, cfg.reuse,
                              report_only=cfg.report_only)
                for steps, folder in checkpoints.items()]
        first = checkpoints[cfg.pretrain_steps[0]]  # every budget's tokenizer is the corpus's one
        methods = {"scratch": Method("from scratch (same architecture and tokenizer)",
                                     [f"model.name_or_path={first}", "model.load_weights=false"])}
        for steps, folder in checkpoints.items():
            methods[f"pretrained_{steps}"] = Method(f"pretrained {steps} steps on {name}, fine-tuned",
                                                    [f"model.name_or_path={folder}"])
        study = Study(f"Few-label topic classification after pretraining on {name}", "finetune_text",
                      FinetuneTextConfig, methods, sections={"Checkpoints": section(runs)}, extra={"pretraining": runs},
                      command=command)
        results = run_study(replace(cfg, output_dir=str(where)), study)
        documents, tokens = corpus_size.count_tokens(corpus, first)
        points.append({"corpus": name, "documents": documents, "tokens": tokens, "pretraining": runs, "results": results})

    rows, made = {}, provenance.record(command)
    for k in cfg.k_per_class:
        rows[k] = corpus_size.curve_rows(points, k, cfg.pretrain_steps)
        refs = corpus_size.references(cfg.reference_studies, k)
        suffix = "" if len(cfg.k_per_class) == 1 else f"_k{k}"
        settings = [f"- pretraining: `recipes/pretrain_mlm.py data.train_file=<corpus> {' '.join(cfg.pretrain_args)} "
                    f"train.max_steps=<steps>`, steps in {cfg.pretrain_steps}",
                    f"- fine-tuning: `recipes/finetune_text.py {' '.join(cfg.finetune_args)}`",
                    f"- corpora drawn with corpus_seed={cfg.corpus_seed}; each corpus's studies are in its folder",
                    provenance.line(made)]
        write_text(out / f"curve{suffix}.md", corpus_size.markdown(rows[k], refs, k, cfg.seeds, settings))
        corpus_size.plot(rows[k], refs, k, out / f"gain_vs_tokens{suffix}.png")
    write_json(out / "curve.json", {"config": {"corpora": cfg.corpora, "seeds": cfg.seeds, "pretrain_steps": cfg.pretrain_steps,
                                               "pretrain_args": cfg.pretrain_args, "finetune_args": cfg.finetune_args},
                                    "rows": {str(k): r for k, r in rows.items()}, "provenance": made})
    print((out / ("curve.md" if len(cfg.k_per_class) == 1 else f"curve_k{cfg.k_per_class[0]}.md")).read_text(encoding="utf-8"))
    return rows


if __name__ == "__main__":
    run(main)
