"""Fine-tune a pretrained (or freshly initialised) encoder/decoder on text classification or regression.

    accelerate launch recipes/finetune_text.py [--config recipes/configs/finetune_text.yaml] [key=value ...]

Starts from an nlp_ssl checkpoint (BERT, ModernBERT, GPT-2, XLM), any HF checkpoint folder, or the same
architecture with fresh weights (``model.load_weights=false``: the from-scratch baseline). Sentence
pairs with ``data.text_pair_column``; similarity scores with ``finetune.problem_type=regression``;
optional auxiliary LM loss (``finetune.aux_lm``; GPT-1 §3.2). The work is done by
:func:`nlp_ssl.text.text_finetuning.finetune`, which ``recipes/glue.py`` runs once per GLUE task.
"""

from __future__ import annotations

from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.text.text_finetuning import (  # noqa: F401 - re-exported for study_text.py
    BUILTIN_TOPIC,
    ClassificationDataConfig,
    FinetuneConfig,
    FinetuneTextConfig,
    finetune,
    load_splits,
    split_pool,
)
from nlp_ssl.training.reporting import RunDescription, run_summary


def main(argv=None):
    cfg = parse_config(FinetuneTextConfig, argv, default_yaml=Path(__file__).parent / "configs" / "finetune_text.yaml")
    builtin = not cfg.data.train_file and cfg.data.source == BUILTIN_TOPIC
    # The built-in task's texts are Wikipedia's (CC BY-SA 4.0), so the card says so.
    description = RunDescription(license="cc-by-sa-4.0") if builtin else None
    results = finetune(cfg, description=description)
    if results is not None:
        keys = ("steps", "best_step", "eval_accuracy", "eval_loss")
        shown = [k for k in results if k in keys or k.startswith(("test_", "last_test_"))]
        print(run_summary(results, cfg.output_dir, shown))
    return results


if __name__ == "__main__":
    run(main)
