"""The vision recipes as users run them: RotNet/SimMIM pretraining, few-label fine-tuning, the study.

Pretraining runs once per module (tiny ViT, 512 images, a few steps); the other tests reuse its
checkpoints. Every run is a subprocess of the recipe, like ``tests/test_recipe_pretrain_mlm.py``.
"""

import json

import numpy as np
import pytest
import torch
import yaml

from nlp_ssl.config import build_config
from nlp_ssl.training import checkpointing
from tests.helpers import run_recipe

pytestmark = pytest.mark.slow

TINY_VIT = "model.config_overrides={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"
PRETRAIN = [
    "data.max_train_images=512", "data.validation_images=64", "impl.micro_batch_size=16", "train.global_batch_size=16",
    "train.max_steps=6", "eval.every=3", "save.every=3", "log.every=1", "log.progress_bar=false", TINY_VIT,
]
FINETUNE = [
    "data.k_per_class=4", "data.validation_per_class=2", "data.max_test_images=200", "impl.micro_batch_size=20",
    "train.global_batch_size=20", "train.max_steps=6", "eval.every=2", "save.every=3", "log.every=1", "log.progress_bar=false",
]


def pretrain(tmp_path_factory, task):
    out = tmp_path_factory.mktemp(task) / "run"
    proc = run_recipe("pretrain_vit.py", f"objective={task}", f"output_dir={out}", *PRETRAIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def rotation_run(tmp_path_factory):
    return pretrain(tmp_path_factory, "rotation")


@pytest.fixture(scope="module")
def mim_run(tmp_path_factory):
    return pretrain(tmp_path_factory, "mim")


def fashion_test_images(n=3):
    from nlp_ssl.data.images import load_fashion_mnist

    test = load_fashion_mnist("test", cache_dir=None)
    return [test[i]["image"] for i in range(n)]


def rotation_accuracy_on_validation(out):
    """Accuracy of the checkpoint in ``out`` on the pretraining run's validation images, all four rotations."""
    from transformers import ViTForImageClassification

    from nlp_ssl.data.image_splits import ImagePoolConfig, load_image_pool
    from nlp_ssl.objectives import RotationCollator

    validation = load_image_pool(ImagePoolConfig(validation_images=64, max_train_images=512), seed=42)["validation"]
    batch = RotationCollator(28, mode="all", num_channels=1, mean=(0.2860,), std=(0.3530,))(list(validation))
    model = ViTForImageClassification.from_pretrained(out).eval()
    with torch.no_grad():  # saved for RGB input: the gray channel three times
        preds = model(pixel_values=batch["pixel_values"].expand(-1, 3, -1, -1)).logits.argmax(-1)
    return (preds == batch["labels"]).float().mean().item()


def accuracy_on_test_images(out, args):
    """Accuracy of the model in ``out`` on the test images a run with ``args`` scores, via its saved processor."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from nlp_ssl.config import load_config
    from nlp_ssl.data.image_splits import labelled_splits
    from nlp_ssl.vision.image_finetuning import FinetuneVisionConfig

    cfg = load_config(FinetuneVisionConfig, overrides=[a for a in args if a.startswith("data.")])
    test = labelled_splits(cfg.data, cfg.seed)["test"]
    arrays = [np.asarray(im)[..., None] for im in test["image"]]
    inputs = AutoImageProcessor.from_pretrained(out)(images=arrays, return_tensors="pt")
    with torch.no_grad():
        preds = AutoModelForImageClassification.from_pretrained(out).eval()(**inputs).logits.argmax(-1).numpy()
    return float(np.mean(preds == np.asarray(test["label"])))


def assert_trainer_artifacts(out, steps, save_every):
    """What nlp_ssl.trainer.Trainer leaves behind, exactly as for the text recipes."""
    saved = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert saved == [f"step_{s:08d}" for s in range(save_every, steps, save_every)], saved
    for checkpoint in (out / "checkpoints").iterdir():
        state = json.loads((checkpoint / checkpointing.STATE_FILE).read_text())
        assert state["step"] == int(checkpoint.name.split("_")[1])
    for name in ("loss_curves.png", "README.md", "all_results.json", "trainer_history.json", "model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "logs").rglob("events.out.tfevents.*")), "tensorboard logs missing"
    assert json.loads((out / "all_results.json").read_text())["steps"] == steps


def test_vision_recipes_drive_the_shared_trainer():
    import recipes.finetune_vision
    import recipes.pretrain_vit
    from nlp_ssl.trainer import Trainer

    assert recipes.pretrain_vit.Trainer is Trainer
    assert recipes.finetune_vision.Trainer is Trainer


def test_rotation_checkpoint_is_a_plain_hf_image_classifier(rotation_run):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTForImageClassification, pipeline

    from nlp_ssl.data.image_transforms import ImageTransform
    from nlp_ssl.data.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD

    out = rotation_run
    assert_trainer_artifacts(out, steps=6, save_every=3)
    results = json.loads((out / "all_results.json").read_text())
    assert np.isfinite(results["eval_loss"])
    # The reported validation accuracy is the saved model's on the held-out images at all four rotations.
    assert results["eval_accuracy"] == pytest.approx(rotation_accuracy_on_validation(out), abs=1.5 / (4 * 64))

    model = AutoModelForImageClassification.from_pretrained(out)
    assert isinstance(model, ViTForImageClassification)
    cfg = model.config
    assert (cfg.image_size, cfg.patch_size, cfg.num_channels) == (28, 4, 3)  # trained on gray, saved for RGB input
    assert {int(k): v for k, v in cfg.id2label.items()} == {0: "0", 1: "90", 2: "180", 3: "270"}

    # The saved processor reproduces the training transform exactly, so the pipeline sees what training saw.
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.size == {"height": 28, "width": 28}
    images = fashion_test_images(2)
    arrays = [np.asarray(image)[..., None] for image in images]
    from_processor = processor(images=arrays, return_tensors="pt")["pixel_values"]
    transform = ImageTransform(28, 1, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    torch.testing.assert_close(from_processor, torch.stack([transform(image) for image in images]).expand(-1, 3, -1, -1))

    classify = pipeline("image-classification", model=str(out))
    predictions = classify(arrays[0])
    assert sorted(p["label"] for p in predictions) == ["0", "180", "270", "90"]
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():
        probs = model(pixel_values=from_processor[:1]).logits.softmax(-1)[0]
    best = max(predictions, key=lambda p: p["score"])
    assert best["score"] == pytest.approx(probs.max().item(), abs=1e-5)


def test_mim_checkpoint_is_a_plain_hf_simmim_model(mim_run):
    from transformers import ViTForMaskedImageModeling

    from nlp_ssl.objectives import MaskedImageCollator
    from nlp_ssl.tasks.vision import MaskedImageModelingTask

    out = mim_run
    assert_trainer_artifacts(out, steps=6, save_every=3)
    model = ViTForMaskedImageModeling.from_pretrained(out).eval()
    assert model.config.encoder_stride == model.config.patch_size == 4
    images = [{"image": image} for image in fashion_test_images(4)]
    batch = MaskedImageCollator(28, 4, mask_patch_size=4, mask_ratio=0.5, num_channels=1, seed=0,
                                mean=(0.2860,), std=(0.3530,))(images)
    with torch.no_grad():
        output = model(**batch)
        loss_sum, count = MaskedImageModelingTask(model)(**batch)["losses"]["loss"]
    assert output.reconstruction.shape == (4, 1, 28, 28)
    torch.testing.assert_close(loss_sum / count, output.loss, rtol=1e-3, atol=1e-5)


def test_finetune_from_rotation_transfers_the_encoder_and_scores_the_test_set(tmp_path, rotation_run):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageClassification, ViTForImageClassification, pipeline

    from nlp_ssl.data.images import FASHION_MNIST_CLASSES

    out = tmp_path / "ft"
    proc = run_recipe("finetune_vision.py", f"model.name_or_path={rotation_run}", f"output_dir={out}", *FINETUNE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_trainer_artifacts(out, steps=6, save_every=3)
    results = json.loads((out / "all_results.json").read_text())
    assert results["test_images"] == 200
    # test_accuracy is the saved (best) model's on the seeded 200 test images, through plain transformers.
    assert results["test_accuracy"] == pytest.approx(accuracy_on_test_images(out, FINETUNE), abs=1.5 / 200)
    assert results["checkpoint_architecture"] == "ViTForImageClassification"
    assert results["new_tensors"] == ["classifier.weight", "classifier.bias"]
    pretrained = ViTForImageClassification.from_pretrained(rotation_run)
    assert results["transferred_tensors"] == len(pretrained.vit.state_dict())
    # load_best_at_end really restores the best model: its re-evaluation matches the best evaluation.
    assert results["eval_accuracy"] == pytest.approx(results["best_accuracy"], abs=1e-6)
    best = load_file(str(out / "best_model" / "model.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    assert best.keys() == final.keys() and all(torch.equal(best[k], final[k]) for k in best)

    model = AutoModelForImageClassification.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(10)] == list(FASHION_MNIST_CLASSES)
    predictions = pipeline("image-classification", model=str(out), top_k=10)(np.asarray(fashion_test_images(1)[0])[..., None])
    assert sorted(p["label"] for p in predictions) == sorted(FASHION_MNIST_CLASSES)


def test_checkpoint_encoders_load_and_heads_are_new(rotation_run, mim_run):
    """In-process: the exact tensors of the pretrained encoders end up in the classifier; the head is fresh."""
    from transformers import AutoConfig, ViTForImageClassification, ViTForMaskedImageModeling

    from nlp_ssl.config import load_config
    from nlp_ssl.errors import ConfigError
    from nlp_ssl.models.grayscale_vit import from_checkpoint
    from nlp_ssl.vision.image_finetuning import FinetuneVisionConfig, build_classifier

    names = [f"c{i}" for i in range(10)]
    for run, cls in ((rotation_run, ViTForImageClassification), (mim_run, ViTForMaskedImageModeling)):
        cfg = load_config(FinetuneVisionConfig, overrides=[f"model.name_or_path={run}", "model.arch=vit"])
        model, transfer = build_classifier(cfg.model, cfg.image, names)
        source = from_checkpoint(cls, run, AutoConfig.from_pretrained(run, num_channels=1))  # as trained: one channel
        for name, tensor in model.vit.state_dict().items():
            assert torch.equal(tensor, source.vit.state_dict()[name]), name
        assert model.classifier.weight.shape == (10, 32)
        assert transfer["new_tensors"] == ["classifier.weight", "classifier.bias"]
        if run == rotation_run:  # the 4-way rotation head is not reused for the 10 classes
            assert not torch.equal(model.classifier.weight[:4], source.classifier.weight)

    # A checkpoint whose encoder would be silently re-initialised is refused, naming the checkpoint.
    bad = load_config(FinetuneVisionConfig, overrides=[
        f"model.name_or_path={rotation_run}", "model.config_overrides={hidden_size: 64, intermediate_size: 64}",
    ])
    with pytest.raises(ConfigError, match=f"model.name_or_path {rotation_run}: .* encoder tensor"):
        build_classifier(bad.model, bad.image, names)
    geometry = load_config(FinetuneVisionConfig, overrides=[f"model.name_or_path={rotation_run}", "image.patch_size=7"])
    with pytest.raises(ConfigError, match="has patch_size=4 but image.patch_size=7"):
        build_classifier(geometry.model, geometry.image, names)


@pytest.mark.parametrize(
    "script, args, expected",
    [
        ("pretrain_vit.py", ["image.patch_size=5"], "image.patch_size 5 does not divide image.image_size 28"),
        ("pretrain_vit.py", ["objective=mim", "mim.mask_patch_size=6"], "mim: mask_patch_size 6 must divide image_size 28"),
        ("pretrain_vit.py", ["data.source={folder}"], "{folder}/notes.txt is not an image PIL can read"),
        ("finetune_vision.py", ["data.k_per_class=0"], "data.k_per_class must be > 0, got 0"),
        ("study_vision.py", ["methods=[scratch, byol]"], "methods: 'byol' is not one of"),
    ],
)
def test_bad_input_fails_with_one_clear_line(tmp_path, script, args, expected):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    args = [a.format(folder=folder) for a in args]
    proc = run_recipe(script, f"output_dir={tmp_path}/out", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected.format(folder=folder) in last, last
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_study_smoke_runs_the_protocol_and_report_only_rebuilds_it(tmp_path, rotation_run):
    """The protocol end to end at toy size: scratch, the auxiliary-loss row, baselines, a frozen probe,
    the learning-speed budget and the compute-matched run; then the report again from the runs alone."""
    import shutil

    import recipes.study_vision

    out = tmp_path / "study"
    checkpoint = tmp_path / "rotation"  # the fixture's, with a pretraining time that keeps the matched run short
    shutil.copytree(rotation_run, checkpoint)
    results_file = checkpoint / "all_results.json"
    results_file.write_text(json.dumps({**json.loads(results_file.read_text()), "train_runtime_s": 2.0}))
    finetune = "[" + ", ".join([*FINETUNE[1:], "log.report_to=none"]) + "]"  # k comes from the study
    args = [
        f"output_dir={out}", f"checkpoints.rotation={checkpoint}", "k_per_class=[2]", "seeds=[0]", "k_seeds={}",
        "k_args={}", "methods=[scratch, scratch_aux, pixels_logreg, pixels_knn, probe_rotation_cls]",
        "learning_rates=[1e-3]", "lr_from={}", f"finetune_args={finetune}", "aux_args=[finetune.aux_unlabelled=1]",
        "speed_k=2", "speed_steps=[3]", "speed_methods=[scratch]", "compute_matched=rotation", "workers=2",
    ]
    proc = run_recipe("study_vision.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    matched = json.loads((out / "compute_matched.json").read_text())
    assert matched["pretrain_seconds"] == 2.0 and matched["steps"] == 6 + matched["extra_steps"] > 6
    assert matched["extra_steps"] == round(2.0 / matched["scratch_seconds_per_step"])
    runs = {r["run"]: r for r in report["runs"]}
    scratch = "scratch_k2_s0_lr0.001"
    assert set(runs) == {scratch, "scratch_aux_k2_s0_lr0.001", "pixels_logreg_k2_s0", "pixels_knn_k2_s0",
                         "probe_rotation_cls_k2_s0", f"{scratch}_steps3", f"{scratch}_steps{matched['steps']}"}
    for name, record in runs.items():
        if not record["baseline"]:  # the headline is each run's last model, its best beside it
            results = json.loads((out / "runs" / name / "all_results.json").read_text())
            assert record["test_accuracy_last"] == results["last_test_accuracy"]
            assert record["test_accuracy_best"] == results["test_accuracy"]
    aux = json.loads((out / "runs" / "scratch_aux_k2_s0_lr0.001" / "all_results.json").read_text())
    assert (aux["aux_task"], aux["aux_head"], aux["aux_unlabelled"]) == ("rotation", "new", 1) and "eval_rot_loss" in aux
    assert aux["train_tokens"] == 6 * (20 + 40) * 49  # both passes' patches count as throughput
    assert report["summary"]["scratch"]["2"]["headline"]["mean"] == runs[scratch]["test_accuracy_last"]
    gain = report["gains"]["scratch"]["pixels_knn"]["2"]["per_seed"]["0"]
    assert gain == pytest.approx(runs["pixels_knn_k2_s0"]["test_accuracy_last"] - runs[scratch]["test_accuracy_last"])
    assert set(report["speed"]["curves"]["scratch"]) == {"3", "6"} and "accuracy" in report["speed"]["compute_matched"]
    assert {r["test_examples"] for r in runs.values()} == {200}
    table = (out / "results.md").read_text()
    for line in ("## Learning rates chosen on validation", "## Has the training loss flattened?", "## Learning speed at k=2",
                 "| linear probe on frozen rotation features ([CLS]) |", f"- rotation: `{checkpoint}` (given as input)"):
        assert line in table, line
    headline = table.split("## Test accuracy, last checkpoint")[1].split("\n## ")[0]
    assert "(n=1)" in headline and "±" not in headline  # one seed has no spread, not a "± 0.0"
    for png in ("accuracy_vs_labels.png", "learning_speed.png", "curves/k2.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # report_only: the same report from the run folders, nothing run again.
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("all_results.json")}
    (out / "results.json").unlink()
    (out / "study_config.yaml").write_text("k_per_class: [100]\n")  # a config from another run of the study
    recipes.study_vision.main([*args, "report_only=true"])
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("all_results.json")} == before
    rebuilt = json.loads((out / "results.json").read_text())
    assert rebuilt["runs"] == report["runs"] and rebuilt["summary"] == report["summary"]
    # Beside the report, the study it describes, as a config that runs it (not one that only reports).
    saved = yaml.safe_load((out / "study_config.yaml").read_text())
    assert (saved["k_per_class"], saved["report_only"], saved["speed_steps"]) == ([2], False, [3])


def test_the_shipped_study_config_passes_the_protocol_checks(tmp_path):
    """recipes/configs/study_vision.yaml as committed: its checks run before anything (a speed row whose
    method was dropped from ``methods`` once stopped the real study at k=100, hours in)."""
    proc = run_recipe("study_vision.py", f"output_dir={tmp_path}", "report_only=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "- k=100 also: `train.max_steps=4000`" in (tmp_path / "results.md").read_text()  # the report of no runs yet


def test_load_best_restores_every_vit_tensor(tmp_path):
    """transformers saves ViT weights under other names than its modules use; the best model must still come back whole."""
    from transformers import ViTConfig, ViTForImageClassification

    from nlp_ssl.data.images import load_digits_dataset
    from nlp_ssl.objectives import ImageClassificationCollator
    from nlp_ssl.tasks.vision import ImageClassificationTask
    from nlp_ssl.trainer import TrainConfig, Trainer

    model = ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=10,
    ))
    data = load_digits_dataset().select(range(16))
    config = build_config(TrainConfig, {
        "output_dir": str(tmp_path), "impl.micro_batch_size": 8, "train.global_batch_size": 8, "log.report_to": [],
        "log.progress_bar": False,
    })
    trainer = Trainer(config, ImageClassificationTask(model), data, ImageClassificationCollator(8, num_channels=1))
    best = {k: v.clone() for k, v in model.state_dict().items()}
    trainer._save_model(tmp_path / "best_model")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    trainer._load_best(tmp_path / "best_model")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best[name]), name
