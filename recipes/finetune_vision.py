"""Fine-tune a ViT on k labelled images per class: from a rotation or MIM checkpoint, or from scratch.

    accelerate launch recipes/finetune_vision.py [--config recipes/configs/finetune_vision.yaml] \
        model.name_or_path=outputs/pretrain_vit data.k_per_class=100 [key=value ...]

``model.name_or_path`` empty trains the same ViT from scratch. From a checkpoint, the ViT encoder
weights are loaded and the classification head is new; the recipe checks that every encoder tensor
really came from the checkpoint (a silently re-initialised encoder would make the comparison
meaningless). A validation set disjoint from the k training images picks the best checkpoint by
accuracy; that model is then scored on the test split, and ``test_accuracy`` lands in
``all_results.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from nlp_ssl.cli import run  # noqa: E402
from nlp_ssl.config import check_ranges, parse_config  # noqa: E402
from nlp_ssl.data.labels import sample_k_per_class  # noqa: E402
from nlp_ssl.errors import ConfigError, DataError  # noqa: E402
from nlp_ssl.metrics import compute_classification_metrics  # noqa: E402
from nlp_ssl.models import ModelConfig, build_model  # noqa: E402
from nlp_ssl.objectives import ImageClassificationCollator  # noqa: E402
from nlp_ssl.reporting import RunDescription  # noqa: E402
from nlp_ssl.tasks.vision import ImageClassificationTask  # noqa: E402
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator  # noqa: E402
from pretrain_vit import ImageConfig, check_image_config, load_images, make_processor, vit_fields  # noqa: E402


@dataclass
class LabeledImagesConfig:
    #: ``fashion_mnist``, ``digits``, an image folder with class sub-folders, a ``save_to_disk`` folder or Hub name.
    source: str = "fashion_mnist"
    train_split: str = "train"
    test_split: str = "test"
    #: Another source for the test images (default: ``source`` at ``test_split``).
    test_source: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    #: Labelled training images per class (seeded by ``seed``).
    k_per_class: int = 100
    #: Extra labelled images per class for validation, disjoint from the training ones (None: max(2, k // 5)).
    validation_per_class: int | None = None
    #: Score on a seeded random subset of the test split (None: all of it).
    max_test_images: int | None = None
    augment: bool = True
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, k_per_class="(0, inf)", validation_per_class="[0, inf)", max_test_images="(0, inf)")


@dataclass
class FinetuneVisionConfig(TrainConfig):
    data: LabeledImagesConfig = field(default_factory=LabeledImagesConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="vit"))


def validation_per_class(data: LabeledImagesConfig) -> int:
    return data.validation_per_class if data.validation_per_class is not None else max(2, data.k_per_class // 5)


def labelled_splits(cfg: FinetuneVisionConfig):
    """``{"train", "validation", "test"}``: k and v images per class from the pool, and the test split."""
    from datasets import ClassLabel, DatasetDict

    data = cfg.data
    if data.k_per_class <= 0:
        raise ConfigError(f"data.k_per_class must be a positive integer, got {data.k_per_class}")
    n_val = validation_per_class(data)
    if n_val <= 0:
        raise ConfigError(f"data.validation_per_class must be a positive integer, got {n_val}")
    pool = load_images(data.source, data.train_split, data.cache_dir, data.image_column, data.label_column)
    if "label" not in pool.column_names or not isinstance(pool.features["label"], ClassLabel):
        raise DataError(
            f"data.source {data.source}: no class-label column (columns: {', '.join(pool.column_names)}); "
            "set data.label_column, or use an image folder with one sub-folder per class"
        )
    pool = pool.select_columns(["image", "label"]).add_column("_row", np.arange(len(pool)))
    # Validation first, with its own seed stream, so the training draw stays nested in k for one seed.
    validation = sample_k_per_class(pool, "label", n_val, seed=cfg.seed + 1_000_003)
    held = np.zeros(len(pool), dtype=bool)
    held[np.asarray(validation["_row"])] = True
    rest = pool.select(np.flatnonzero(~held))
    train = sample_k_per_class(rest, "label", data.k_per_class, seed=cfg.seed)
    test = load_images(data.test_source or data.source, data.test_split, data.cache_dir, data.image_column, data.label_column)
    if "label" not in test.column_names:
        raise DataError(f"data.test_source {data.test_source or data.source}: the test split has no labels")
    if test.features["label"] != pool.features["label"]:
        raise DataError(
            f"data: the test split's classes {test.features['label'].names} differ from the training pool's "
            f"{pool.features['label'].names}"
        )
    test = test.select_columns(["image", "label"])
    if data.max_test_images and data.max_test_images < len(test):
        test = test.shuffle(seed=cfg.seed).select(range(data.max_test_images))
    return DatasetDict(train=train.remove_columns("_row"), validation=validation.remove_columns("_row"), test=test)


def check_checkpoint_geometry(path: str, image: ImageConfig) -> None:
    """The checkpoint's ViT must see the images the data pipeline produces."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.name_or_path {path}: not a loadable HF model folder ({err})") from None
    if config.model_type != "vit":
        raise ConfigError(f"model.name_or_path {path}: a {config.model_type!r} model, expected a ViT")
    for name, want in vit_fields(image).items():
        if getattr(config, name) != want:
            raise ConfigError(
                f"model.name_or_path {path} has {name}={getattr(config, name)} but image.{name}={want}; "
                f"set image.{name}={getattr(config, name)}"
            )


def encoder_transfer(model, checkpoint: str) -> dict:
    """Check that every ViT encoder tensor of ``model`` equals the checkpoint's; list what is new.

    The checkpoint is reloaded in its own architecture (rotation classifier or SimMIM model) and the
    two ``vit`` encoders are compared tensor by tensor. Raises when any differs: with
    ``ignore_mismatched_sizes`` a wrong-sized checkpoint would otherwise be re-initialised silently.
    """
    import torch
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint)
    arch = (config.architectures or ["ViTModel"])[0]
    source = getattr(transformers, arch).from_pretrained(checkpoint)
    source_encoder = source.vit.state_dict() if hasattr(source, "vit") else source.state_dict()
    transferred, differ = [], []
    for name, tensor in model.vit.state_dict().items():
        other = source_encoder.get(name)
        same = other is not None and other.shape == tensor.shape and torch.equal(other, tensor)
        (transferred if same else differ).append(f"vit.{name}")
    if differ or not transferred:
        raise ConfigError(
            f"model.name_or_path {checkpoint}: {len(differ)} encoder tensor(s) were not loaded from it "
            f"(e.g. {differ[0] if differ else 'all'}); is it a ViT of the same size?"
        )
    new = [name for name, _ in model.named_parameters() if not name.startswith("vit.")]
    return {"transferred_tensors": len(transferred), "new_tensors": new, "checkpoint_architecture": arch}


def build_classifier(cfg: FinetuneVisionConfig, names: list[str]):
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    if not cfg.model.name_or_path:
        return build_model(cfg.model, "image_classification", **vit_fields(cfg.image), num_labels=len(names), **labels), None
    check_checkpoint_geometry(cfg.model.name_or_path, cfg.image)
    # A rotation checkpoint has a 4-way head: its shape no longer fits, so it is re-initialised.
    model = build_model(cfg.model, "image_classification", ignore_mismatched_sizes=True, **labels)
    return model, encoder_transfer(model, cfg.model.name_or_path) if cfg.model.load_weights else None


def predict(model, dataset, collator, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class ids over ``dataset`` (no augmentation)."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    preds, refs = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
            preds.append(logits.argmax(-1).cpu().numpy())
            refs.append(batch["labels"].numpy())
    return np.concatenate(preds), np.concatenate(refs)


def main(argv=None):
    cfg = parse_config(FinetuneVisionConfig, argv, default_yaml=Path(__file__).parent / "configs" / "finetune_vision.yaml")
    check_image_config(cfg.image)
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        splits = labelled_splits(cfg)
        names = splits["train"].features["label"].names
        model, transfer = build_classifier(cfg, names)

    stats = dict(num_channels=cfg.image.num_channels, mean=cfg.image.mean, std=cfg.image.std)
    collator = ImageClassificationCollator(cfg.image.image_size, seed=cfg.seed, augment=cfg.data.augment, **stats)
    eval_collator = ImageClassificationCollator(cfg.image.image_size, seed=cfg.seed, **stats)
    start = cfg.model.name_or_path or "trained from scratch"
    description = RunDescription(
        objective=f"image classification, {cfg.data.k_per_class} labelled images per class",
        data=f"{cfg.data.source} [{cfg.data.train_split}]: {len(splits['train'])} training, "
        f"{len(splits['validation'])} validation images; test: {len(splits['test'])} images",
        base_model=start,
        pipeline_tag="image-classification",
    )
    trainer = Trainer(
        cfg, ImageClassificationTask(model), splits["train"], collator, eval_dataset=splits["validation"],
        eval_collator=eval_collator, processor=make_processor(cfg.image), accelerator=accelerator,
        description=description, run_config=cfg,
    )

    def score_test(model) -> dict:
        """Accuracy and macro-F1 on the test images (of the last and the best model)."""
        batch = cfg.eval_batch_size or max(cfg.micro_batch_size, 256)
        preds, refs = predict(model, splits["test"], eval_collator, batch, accelerator.device)
        scores = compute_classification_metrics(preds, refs)
        return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"]}

    extra = {
        "test_images": len(splits["test"]),
        "k_per_class": cfg.data.k_per_class,
        "validation_per_class": validation_per_class(cfg.data),
        "init": start,
        **(transfer or {}),
    }
    results = trainer.fit(extra_results=extra, score_model=score_test)
    if accelerator.is_main_process:
        print({k: results[k] for k in ("steps", "best_step", "eval_accuracy", "test_accuracy") if k in results})
    accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    run(main)
