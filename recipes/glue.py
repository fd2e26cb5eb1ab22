"""Score a checkpoint on GLUE: fine-tune it on each task, evaluate on the dev sets, print the table.

    python recipes/glue.py model.name_or_path=outputs/pretrain_mlm glue.data_dir=glue_data
    python recipes/glue.py model.name_or_path=answerdotai/ModernBERT-base glue.data_dir=nyu-mll/glue   # online

``glue.data_dir`` holds the classic GLUE download (``CoLA/train.tsv`` ...) or a local copy of the
Hub dataset ``nyu-mll/glue`` (``cola/train-*.parquet`` ...); missing tasks are skipped and listed.
Writes ``glue_results.json`` (per-task metrics and the leaderboard average) and ``glue_results.md``.
Every task runs through :func:`nlp_ssl.text.text_finetuning.finetune`, the code behind finetune_text.py.
"""

from __future__ import annotations

from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.text.glue_harness import GlueConfig, results_table, run_glue


def main(argv=None):
    cfg = parse_config(GlueConfig, argv, default_yaml=Path(__file__).parent / "configs" / "glue.yaml")
    summary = run_glue(cfg)
    print(results_table(summary), end="")
    return summary


if __name__ == "__main__":
    run(main)
