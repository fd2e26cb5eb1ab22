"""Fine-tune a ViT on k labelled images per class: from a rotation or MIM checkpoint, or from scratch.

    accelerate launch recipes/finetune_vision.py [--config recipes/configs/finetune_vision.yaml] \
        model.name_or_path=outputs/pretrain_vit data.k_per_class=100 [key=value ...]

``model.name_or_path`` empty trains the same ViT from scratch. From a checkpoint, the ViT encoder
weights are loaded and the classification head is new; every encoder tensor is checked to really
come from the checkpoint (:func:`nlp_ssl.vision.image_finetuning.encoder_transfer`). A validation set
disjoint from the k training images picks the best checkpoint by accuracy; that model is then
scored on the test split (``test_accuracy``), and so is the last one (``last_test_accuracy``).
``finetune.aux_task=rotation|mim|auto finetune.aux_weight=0.5`` adds an auxiliary pretext loss,
``L = L_cls + λ·L_aux`` (``finetune.aux_unlabelled=1``: one unlabelled image per labelled one too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.image_splits import labelled_splits, validation_per_class
from nlp_ssl.metrics import compute_classification_metrics
from nlp_ssl.metrics.prediction import predict
from nlp_ssl.trainer import Trainer, make_accelerator
from nlp_ssl.training.reporting import RunDescription, run_summary
from nlp_ssl.vision.image import check_image_config, make_processor
from nlp_ssl.vision.image_finetuning import FinetuneVisionConfig, build_classifier, check_aux, finetuning_parts


def main(argv=None):
    cfg = parse_config(FinetuneVisionConfig, argv, default_yaml=Path(__file__).parent / "configs" / "finetune_vision.yaml")
    check_image_config(cfg.image)
    check_aux(cfg)
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        splits = labelled_splits(cfg.data, cfg.seed, unlabelled=cfg.finetune.aux_unlabelled > 0)
        names = splits["train"].features["label"].names
        model, transfer = build_classifier(cfg.model, cfg.image, names)
        parts = finetuning_parts(cfg, model, splits.get("unlabelled"))

    start = cfg.model.name_or_path or "trained from scratch"
    aux = parts.record["aux_task"]
    with_aux = f" + auxiliary {aux} loss (λ={cfg.finetune.aux_weight})" if aux != "none" else ""
    description = RunDescription(
        objective=f"image classification, {cfg.data.k_per_class} labelled images per class{with_aux}",
        data=f"{cfg.data.source} [{cfg.data.train_split}]: {len(splits['train'])} training, "
        f"{len(splits['validation'])} validation images; test: {len(splits['test'])} images",
        base_model=start,
        pipeline_tag="image-classification",
        **data_card(cfg.data.source),
    )
    trainer = Trainer(
        cfg, parts.task, splits["train"], parts.collator, eval_dataset=splits["validation"],
        eval_collator=parts.eval_collator, processor=make_processor(cfg.image), accelerator=accelerator,
        description=description, run_config=cfg,
    )

    def score_test(model) -> dict:
        """Accuracy and macro-F1 on the test images (of the last and the best model)."""
        batch = cfg.eval.batch_size or max(cfg.impl.micro_batch_size, 256)
        preds = predict(model, splits["test"], parts.test_collator, batch, accelerator.device)
        scores = compute_classification_metrics(preds, np.asarray(splits["test"]["label"]))
        return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"]}

    extra = {
        "test_images": len(splits["test"]),
        "k_per_class": cfg.data.k_per_class,
        "validation_per_class": validation_per_class(cfg.data),
        "init": start,
        **parts.record,
        **(transfer or {}),
    }
    results = trainer.fit(extra_results=extra, score_model=score_test)
    if accelerator.is_main_process:
        print(run_summary(results, cfg.output_dir, ("steps", "best_step", "eval_accuracy", "test_accuracy")))
    accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    run(main)
