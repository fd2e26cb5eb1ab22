"""The few-label text study: test accuracy against labels per class, for pretraining vs no pretraining.

    python recipes/study_text.py pretrained=outputs/pretrain_mlm [k_per_class=[8,32,128]] [seeds=[0,1,2]] ...
    python recipes/study_text.py checkpoint=builtin:minilm "methods=[checkpoint,checkpoint_continued,tfidf]"
    python recipes/study_text.py pretrained=auto unlabeled_files=[more.txt] \\
        "finetune_args=[data.train_file=pool.jsonl,data.test_file=test.jsonl]"   # any labelled task

For every k and seed, on the same k examples per class and the same validation and test sets:
``scratch`` (the pretrained model's architecture, fresh weights), ``pretrained`` (plain fine-tuning),
``pretrained_aux`` (+ the auxiliary LM loss, GPT-1 §3.2), ``tfidf`` (TF-IDF + logistic regression),
``frozen_probe`` (logistic regression on the frozen pretrained model's mean-pooled states),
``checkpoint`` (fine-tune a given public checkpoint) and ``checkpoint_continued`` (that checkpoint
after continued pretraining on the task's texts, then fine-tuned). ``pretrained=auto`` pretrains
the from-scratch model here too. Pretraining reads the task's labelled pool without labels plus
``unlabeled_files``, never the test file (:mod:`nlp_ssl.study.pretraining`). The fine-tuning runs are
``recipes/finetune_text.py`` subprocesses (``workers`` at a time); the grid, reuse and the report are
:mod:`nlp_ssl.study`'s, and ``report_only=true`` rebuilds the report from the runs on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.models.builders import resolve_model_path
from nlp_ssl.study import Method, Study, StudyConfig, provenance, run_study
from nlp_ssl.study.baselines import frozen_embeddings_logreg, tfidf_logreg
from nlp_ssl.study.grid import check_arguments, check_methods
from nlp_ssl.study.pretraining import check_test_unseen, corpus_args, pretrain_step, section
from nlp_ssl.study.runs import recipe_yaml
from nlp_ssl.text.text_finetuning import FinetuneTextConfig, load_splits, split_pool

#: Methods that need the from-scratch pretrained model (``pretrained``), and the continued checkpoint.
USES_PRETRAINED = ("scratch", "pretrained", "pretrained_aux", "frozen_probe")


@dataclass
class StudyTextConfig(StudyConfig):
    output_dir: str = "results/text_study"
    k_per_class: list[int] = field(default_factory=lambda: [8, 32, 128])
    methods: list[str] = field(default_factory=lambda: ["scratch", "pretrained", "pretrained_aux", "tfidf"])
    #: The model pretrained from scratch (recipes/pretrain_mlm.py or pretrain_clm.py), or ``auto``:
    #: pretrain it here with recipes/pretrain_mlm.py on the task's texts (+ ``pretrain_args``).
    pretrained: str = "outputs/pretrain_mlm"
    #: A public checkpoint for ``checkpoint`` and ``checkpoint_continued`` (folder, Hub name or builtin:minilm).
    checkpoint: str = "builtin:minilm"
    #: Unlabelled text files that join the task's pool texts in every pretraining run (never the test file).
    unlabeled_files: list[str] = field(default_factory=list)
    #: Arguments of the from-scratch pretraining run (``pretrained=auto``): recipes/pretrain_mlm.py defaults plus these.
    pretrain_args: list[str] = field(default_factory=list)
    #: Continued pretraining of ``checkpoint``: this recipe with recipes/configs/<recipe>_continue.yaml plus ``continue_args``.
    continue_recipe: str = "pretrain_mlm"
    continue_args: list[str] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        check_arguments("pretrain_args", self.pretrain_args)
        check_arguments("continue_args", self.continue_args)


def linear_baseline(method: str, checkpoint: str):
    """TF-IDF or frozen-probe logistic regression on the very rows a fine-tuning run of the same k and seed trains on."""

    def fit(ft: FinetuneTextConfig) -> dict:
        splits, names, where = load_splits(ft.data)
        if splits["test"] is None:
            raise ConfigError("the study needs a test set: set data.test_file in finetune_args (or use the built-in task)")
        train, _ = split_pool(splits["pool"], names, ft.data, ft.seed, where)
        test = splits["test"]
        args = (train["text"][:], train["label"][:], test["text"][:], test["label"][:])
        if method == "tfidf":
            scores = tfidf_logreg(*args, seed=ft.seed)
        else:
            scores = frozen_embeddings_logreg(checkpoint, *args, seed=ft.seed, max_length=ft.data.max_length)
        return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"], "test_examples": len(test)}

    return fit


def main(argv=None):
    cfg = parse_config(StudyTextConfig, argv, default_yaml=Path(__file__).parent / "configs" / "study_text.yaml")
    out = Path(cfg.output_dir)
    pretrained = str(out / "pretrain" / "scratch") if cfg.pretrained == "auto" else cfg.pretrained
    continued = out / "pretrain" / "continued"
    start = [f"model.name_or_path={pretrained}"]
    methods = {
        "scratch": Method("from scratch (same architecture)", [*start, "model.load_weights=false"]),
        "pretrained": Method("pretrained, fine-tuned", start),
        "pretrained_aux": Method("pretrained, fine-tuned + auxiliary LM loss", [*start, "finetune.aux_lm=auto"]),
        "tfidf": Method("TF-IDF + logistic regression", baseline=linear_baseline("tfidf", pretrained)),
        "frozen_probe": Method("logistic regression on frozen states", baseline=linear_baseline("frozen_probe", pretrained)),
        "checkpoint": Method(f"checkpoint ({cfg.checkpoint}), fine-tuned", [f"model.name_or_path={cfg.checkpoint}"]),
        "checkpoint_continued": Method(f"checkpoint ({cfg.checkpoint}) + continued pretraining, fine-tuned",
                                       [f"model.name_or_path={continued}"]),
    }
    study = Study("Few-label text classification", "finetune_text", FinetuneTextConfig, methods,
                  command=provenance.command_line(__file__, argv))
    check_methods(cfg, study)
    # The pretraining corpus: the task's pool as the fine-tuning runs read it (finetune_args), test file excluded.
    task = parse_config(FinetuneTextConfig, cfg.finetune_args, default_yaml=recipe_yaml("finetune_text"))
    corpus = corpus_args(task.data, cfg.unlabeled_files)
    if cfg.unlabeled_files:
        test = load_splits(task.data)[0]["test"]
        check_test_unseen(test["text"][:] if test is not None else None, cfg.unlabeled_files, task.data.text_column)
    runs = []
    if any(m in cfg.methods for m in USES_PRETRAINED):
        if cfg.pretrained == "auto":
            runs.append(pretrain_step("pretrained from scratch", "pretrain_mlm", [*corpus, *cfg.pretrain_args],
                                      Path(pretrained), cfg.reuse, report_only=cfg.report_only))
        elif not cfg.report_only and not (Path(pretrained) / "config.json").is_file():
            raise ConfigError(
                f"pretrained {pretrained}: not a checkpoint folder (no config.json); run recipes/pretrain_mlm.py first "
                "or set pretrained=auto"
            )
    if "checkpoint_continued" in cfg.methods:
        args = [f"model.name_or_path={cfg.checkpoint}", *corpus, *cfg.continue_args]
        runs.append(pretrain_step("continued pretraining of the checkpoint", cfg.continue_recipe, args, continued,
                                  cfg.reuse, config=f"{cfg.continue_recipe}_continue", report_only=cfg.report_only))
    lines = [f"- pretrained model: `{pretrained}`"] if any(m in cfg.methods for m in USES_PRETRAINED) else []
    if {"checkpoint", "checkpoint_continued"} & set(cfg.methods):
        lines.append(f"- checkpoint: `{cfg.checkpoint}` (`{resolve_model_path(cfg.checkpoint)}`)")
    study.sections = {"Checkpoints": lines + section(runs)}
    study.extra = {"pretraining": runs}
    results = run_study(cfg, study)
    print((out / "results.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    run(main)
