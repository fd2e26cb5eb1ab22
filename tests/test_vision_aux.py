"""The auxiliary pretext loss of few-label ViT fine-tuning (tasks/vision.PretextAuxTask, its collator and builder)."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTForMaskedImageModeling

from nlp_ssl.config import build_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives.image_classification import ImageClassificationCollator, PretextAuxCollator
from nlp_ssl.objectives.mim import MaskedAuxViews, MaskedImageCollator
from nlp_ssl.objectives.rotation import RotationAuxViews
from nlp_ssl.tasks.vision import (
    ImageClassificationTask,
    MaskedImageAux,
    MaskedImageHead,
    PretextAuxTask,
    RotationAux,
    RotationHead,
)

F = torch.nn.functional


def tiny_config(image_size=28, patch=4, **extra):
    return ViTConfig(image_size=image_size, patch_size=patch, encoder_stride=patch, num_channels=1, hidden_size=32,
                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, **extra)


def images(n, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L") for _ in range(n)]


def labelled(n, size=28, seed=0):
    return [{"image": im, "label": i % 3} for i, im in enumerate(images(n, size, seed))]


def pool(n=6, size=28):
    return datasets.Dataset.from_dict({"image": images(n, size, seed=7)}, features=datasets.Features({"image": datasets.Image()}))


def test_rotation_aux_loss_matches_hand_computation():
    torch.manual_seed(0)
    classifier = ViTForImageClassification(tiny_config(num_labels=3)).eval()
    # A RotNet checkpoint's classifier on the same encoder: its own transformers loss is the hand computation.
    rotnet = ViTForImageClassification(tiny_config(num_labels=4)).eval()
    rotnet.vit.load_state_dict(classifier.vit.state_dict())
    task = PretextAuxTask(classifier, RotationAux(RotationHead(rotnet.classifier), 4), aux_weight=0.3)
    assert task.loss_weights == {"cls": 1.0, "rot": 0.3}
    cls_collator = ImageClassificationCollator(28, num_channels=1, augment=True, seed=1)
    batch = PretextAuxCollator(cls_collator, RotationAuxViews(), pool=pool(), pool_per_image=1)(labelled(3))
    assert batch["aux_pixel_values"].shape == (6, 1, 28, 28) and batch["aux_labels"].shape == (6,)
    for i in range(3):  # row 2i is example i's own classification view, turned by its label
        k = int(batch["aux_labels"][2 * i])
        assert torch.equal(torch.rot90(batch["aux_pixel_values"][2 * i], -k, dims=(-2, -1)), batch["pixel_values"][i])
    with torch.no_grad():
        out = task(**batch)
        cls_logits = classifier(pixel_values=batch["pixel_values"]).logits
        rot_hidden = classifier.vit(pixel_values=batch["aux_pixel_values"]).last_hidden_state[:, 0]
        rot_logits = rot_hidden @ rotnet.classifier.weight.T + rotnet.classifier.bias
        hf_rot = rotnet(pixel_values=batch["aux_pixel_values"], labels=batch["aux_labels"]).loss
    counts = task.count_items(batch)
    assert counts["cls"] == out["losses"]["cls"][1] == 3 and counts["rot"] == out["losses"]["rot"][1] == 6
    by_hand = F.cross_entropy(cls_logits, batch["labels"]) + 0.3 * F.cross_entropy(rot_logits, batch["aux_labels"])
    total = sum(w * out["losses"][n][0] / counts[n] for n, w in task.loss_weights.items())  # as the trainer weighs them
    torch.testing.assert_close(total, by_hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["losses"]["rot"][0] / 6, hf_rot, rtol=1e-5, atol=1e-6)
    correct = (rot_logits.argmax(-1) == batch["aux_labels"]).sum()
    assert out["metrics"]["rot_accuracy"][0] == correct


def test_mim_aux_loss_matches_transformers_simmim():
    torch.manual_seed(0)
    classifier = ViTForImageClassification(tiny_config(num_labels=3)).eval()
    simmim = ViTForMaskedImageModeling(tiny_config()).eval()
    with torch.no_grad():
        simmim.vit.embeddings.mask_token.normal_()  # a non-zero token, so replacing the patches shows
    missing = simmim.vit.load_state_dict(classifier.vit.state_dict(), strict=False)
    assert missing.missing_keys == ["embeddings.mask_token"]
    head = MaskedImageHead(simmim.vit.embeddings.mask_token, simmim.decoder)
    task = PretextAuxTask(classifier, MaskedImageAux(head, 4), aux_weight=0.5)
    masker = MaskedImageCollator(28, 4, 4, 0.5, num_channels=1)
    batch = PretextAuxCollator(ImageClassificationCollator(28, num_channels=1), MaskedAuxViews(masker))(labelled(3))
    assert torch.equal(batch["aux_pixel_values"], batch["pixel_values"])
    with torch.no_grad():
        out = task(**batch)
        reference = simmim(pixel_values=batch["aux_pixel_values"], bool_masked_pos=batch["aux_bool_masked_pos"]).loss
        unmasked = classifier.vit(pixel_values=batch["pixel_values"]).last_hidden_state
    mim_sum, mim_count = out["losses"]["mim"]
    assert mim_count == batch["aux_bool_masked_pos"].sum() * 16 == task.count_items(batch)["mim"]
    torch.testing.assert_close(mim_sum / mim_count, reference, rtol=1e-4, atol=1e-6)
    # The hook is gone after the pass: the classifier itself still sees unmasked patches.
    with torch.no_grad():
        torch.testing.assert_close(classifier.vit(pixel_values=batch["pixel_values"]).last_hidden_state, unmasked)
    cls_logits = classifier(pixel_values=batch["pixel_values"]).logits
    torch.testing.assert_close(out["losses"]["cls"][0], F.cross_entropy(cls_logits, batch["labels"], reduction="sum"))


def _fit(tmp_path, name, task, collator, steps=4):
    from nlp_ssl.data.images import load_digits_dataset
    from nlp_ssl.trainer import TrainConfig, Trainer

    data = load_digits_dataset().select(range(16))
    config = build_config(TrainConfig, {
        "output_dir": str(tmp_path / name), "train.max_steps": steps, "impl.micro_batch_size": 8, "train.global_batch_size": 8,
        "optim.learning_rate": 1e-2, "optim.warmup_steps": 1, "log.report_to": [], "log.progress_bar": False,
        "save.every": 1000, "eval.every": 1000, "seed": 3,
    })
    Trainer(config, task, data, collator).fit()
    return {k: v.detach().clone() for k, v in task.model.state_dict().items()}


def test_lambda_zero_is_plain_finetuning(tmp_path):
    def model():
        torch.manual_seed(0)
        return ViTForImageClassification(tiny_config(8, 4, num_labels=10))

    def collator():
        return ImageClassificationCollator(8, num_channels=1, augment=True, seed=3)

    plain_collator = collator()
    plain = _fit(tmp_path, "plain", ImageClassificationTask(model()), plain_collator)
    assert plain_collator.epoch == 1, "the trainer moves the collator to each new epoch (16 images, 8 per step, 4 steps)"
    head = RotationAux(RotationHead(torch.nn.Linear(32, 4)), 4)
    m = model()
    zero = PretextAuxTask(m, head, aux_weight=0.0)
    assert zero.aux is None and zero.loss_weights == {"cls": 1.0}
    assert sum(p.numel() for p in zero.parameters()) == sum(p.numel() for p in m.parameters())
    got = _fit(tmp_path, "zero", zero, PretextAuxCollator(collator(), RotationAuxViews()))
    for name, value in plain.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
    # Not vacuous: with λ > 0 the same steps end elsewhere.
    other = _fit(tmp_path, "half", PretextAuxTask(model(), head, 0.5), PretextAuxCollator(collator(), RotationAuxViews()))
    assert any(not torch.allclose(other[n], v, atol=1e-5) for n, v in plain.items())


def test_aux_flops_and_patches_count_both_passes():
    torch.manual_seed(0)
    classifier = ViTForImageClassification(tiny_config(num_labels=3))
    plain = ImageClassificationTask(classifier)
    collator = PretextAuxCollator(ImageClassificationCollator(28, num_channels=1), RotationAuxViews(), pool=pool(),
                                  pool_per_image=2)
    batch = collator(labelled(2))
    task = PretextAuxTask(classifier, RotationAux(RotationHead(torch.nn.Linear(32, 4)), 4), 0.5)
    assert task.tokens_in(batch) == (2 + 6) * 49
    # The aux pass is the plain pass over 6 images with a 4-way instead of a 3-way head at [CLS].
    aux_only = {"pixel_values": batch["aux_pixel_values"]}
    head_difference = 6 * 6 * (4 - 3) * (32 + 1)
    assert task.flops(batch) == pytest.approx(plain.flops(batch) + plain.flops(aux_only) + head_difference, rel=1e-12)


def test_bad_aux_arguments_are_refused():
    model = ViTForImageClassification(tiny_config(num_labels=3))
    from nlp_ssl.vision.image_finetuning import VisionAuxConfig

    with pytest.raises(ConfigError, match="a rotation head has 4 outputs"):
        RotationHead(torch.nn.Linear(32, 3))
    with pytest.raises(ConfigError, match=r"aux_task 'jigsaw' is not one of \['none', 'auto', 'rotation', 'mim'\]"):
        VisionAuxConfig(aux_task="jigsaw")
    with pytest.raises(ConfigError, match="aux_weight must be >= 0"):
        PretextAuxTask(model, RotationAux(RotationHead(torch.nn.Linear(32, 4)), 4), -1.0)
    with pytest.raises(ConfigError, match="non-empty unlabelled pool"):
        PretextAuxCollator(ImageClassificationCollator(28), RotationAuxViews(), pool_per_image=1)


def test_unlabelled_pool_leaves_out_the_validation_images_and_keeps_the_labelled_draw():
    from nlp_ssl.data.image_splits import LabeledImagesConfig, labelled_splits

    data = LabeledImagesConfig(source="digits", test_source="digits", k_per_class=3, validation_per_class=2)
    plain, with_pool = labelled_splits(data, seed=4), labelled_splits(data, seed=4, unlabelled=True)
    for split in ("train", "validation"):  # the same images and labels, no extra column
        assert with_pool[split].column_names == plain[split].column_names == ["image", "label"]
        assert [np.asarray(im).tobytes() for im in with_pool[split]["image"]] == [
            np.asarray(im).tobytes() for im in plain[split]["image"]]
    pool = with_pool["unlabelled"]
    assert pool.column_names == ["image"] and len(pool) == 1797 - 20
    pool_bytes = {np.asarray(im).tobytes() for im in pool["image"]}
    validation_bytes = [np.asarray(im).tobytes() for im in plain["validation"]["image"]]
    train_bytes = [np.asarray(im).tobytes() for im in plain["train"]["image"]]
    assert all(b in pool_bytes for b in train_bytes)  # labelled training images stay in the pool
    assert not any(b in pool_bytes for b in validation_bytes)
