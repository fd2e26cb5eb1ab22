"""The pretraining runs a text study makes before its grid, on the task's own texts.

The corpus is the fine-tuning task's labelled pool read without its labels (``data.train_file``'s
text column, or the built-in corpus's training articles), plus any unlabelled files: task-adaptive
pretraining (Gururangan et al., 2020). The task's test file is never part of it, and an unlabelled
file that repeats a test text is refused, so the test set stays unseen by every run. Each
pretraining run is a recipe subprocess like the fine-tuning runs (reused when finished, continued
when not).
"""

from __future__ import annotations

from pathlib import Path

from nlp_ssl.data.text import read_text_file
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.study.runs import read_results, recipe_yaml, recipes_dir, run_recipe

#: The built-in topic task's pool is the built-in corpus's training articles (its test titles are held out).
BUILTIN_CORPUS = "builtin:wiki"


def corpus_args(data, unlabeled_files: list[str]) -> list[str]:
    """Pretraining-recipe arguments whose corpus is ``data``'s labelled pool (labels unread) + ``unlabeled_files``.

    ``data`` is a fine-tuning config's ``ClassificationDataConfig``; its ``test_file`` is never read.
    """
    if data.train_file:
        key = "data.source" if Path(data.train_file).is_dir() else "data.train_file"
        args = [f"{key}={data.train_file}", f"data.text_column={data.text_column}"]
    else:
        args = [f"data.source={BUILTIN_CORPUS}"]
    if unlabeled_files:
        bad = [f for f in unlabeled_files if "," in f or "]" in f]
        if bad:
            raise ConfigError(f"unlabeled_files: {bad[0]!r}: a path with ',' or ']' cannot be passed as a list; rename it")
        args.append("data.extra_train_files=[" + ",".join(unlabeled_files) + "]")
    return args


def file_texts(path: str, text_column: str) -> list[str]:
    """Every text of one unlabelled file, in file order (a .txt file's lines; else its ``text_column``)."""
    ds = read_text_file(path, "unlabeled_files", text_column)
    return ds[ds.column_names[0]][:]


def check_test_unseen(test_texts: list[str] | None, unlabeled_files: list[str], text_column: str) -> None:
    """Refuse an unlabelled file that holds any test text: pretraining on it would see the test set."""
    if not test_texts:
        return
    test = set(test_texts)
    for path in unlabeled_files:
        texts = file_texts(path, text_column)
        shared = [i for i, text in enumerate(texts) if text in test]
        if shared:
            raise DataError(
                f"unlabeled_files {path}: {len(shared)} of its {len(texts)} texts are test texts of the task "
                f"(the first is text {shared[0] + 1}); remove them so that pretraining never sees the test set"
            )


def pretrain(recipe: str, args: list[str], out: Path, reuse: bool = True, config: str | None = None) -> dict:
    """Run a pretraining recipe (with ``recipes/configs/<config>.yaml``, else its default) into ``out``."""
    yaml = recipe_yaml(config or recipe)
    if not yaml.is_file():
        raise ConfigError(f"pretraining config {config!r}: no {yaml} in {recipes_dir()}/configs")
    return run_recipe(recipe, ["--config", str(yaml), *args], out, reuse)


def pretrain_step(name: str, recipe: str, args: list[str], out: Path, reuse: bool = True,
                  config: str | None = None, report_only: bool = False) -> dict:
    """``pretrain`` as one record for the study's report: name, command, folder and the run's results
    (``report_only``: the results of a finished run, nothing run)."""
    results = (read_results(out) or {}) if report_only else pretrain(recipe, args, out, reuse, config)
    command = f"recipes/{recipe}.py" + (f" --config {config}" if config else "") + " " + " ".join(args)
    keep = ("steps", "eval_accuracy", "eval_loss", "eval_unigram_baseline_accuracy", "train_runtime_s")
    return {"name": name, "command": command, "folder": str(out), **{k: results[k] for k in keep if k in results}}


def section(records: list[dict]) -> list[str]:
    """The report's lines on the pretraining runs."""
    lines = []
    for r in records:
        scores = f", validation masked-token accuracy {100 * r['eval_accuracy']:.1f}%" if "eval_accuracy" in r else ""
        minutes = f", {r['train_runtime_s'] / 60:.0f} min" if "train_runtime_s" in r else ""
        lines.append(f"- {r['name']}: `{r['command']}` → `{r['folder']}` ({r.get('steps')} steps{scores}{minutes})")
    return lines
