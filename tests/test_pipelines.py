"""Every kind of checkpoint the recipes save, loaded by ``transformers.pipeline`` on the inputs users pass.

The README promises that checkpoints are plain Hugging Face folders that ``pipeline(...)`` loads; a
new transformers release can break that without any of our code changing (its image pipeline began
converting every image to RGB), so CI runs this file on what a fresh install resolves. Each recipe
runs once, as small as it goes; the fine-tuning of pairs starts from the MLM run's checkpoint.
"""

import numpy as np
import pytest
import torch

from tests.helpers import run_recipe, toy_texts

pytestmark = pytest.mark.slow

QUICK = ["train.max_steps=2", "eval.every=2", "save.every=100", "log.every=1", "log.progress_bar=false", "log.report_to=[]",
         "impl.micro_batch_size=8", "train.global_batch_size=8"]
TINY_TEXT = ["data.block_size=32", "tokenizer.vocab_size=600", "data.validation_split=0.1", "data.max_train_documents=64"]
TINY_BERT = "model.config_overrides={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"
TINY_GPT2 = "model.config_overrides={n_embd: 32, n_layer: 1, n_head: 2, n_inner: 64}"
TINY_VIT = "model.config_overrides={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"


def train(recipe, out, *args):
    proc = run_recipe(recipe, f"output_dir={out}", *QUICK, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out)


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory, wiki_jsonl):
    out = tmp_path_factory.mktemp("mlm") / "run"
    return train("pretrain_mlm.py", out, f"data.train_file={wiki_jsonl}", *TINY_TEXT, TINY_BERT)


def test_fill_mask(mlm_checkpoint):
    from transformers import pipeline

    fill = pipeline("fill-mask", model=mlm_checkpoint)
    mask = fill.tokenizer.mask_token
    one = fill(f"the history of the {mask} is long.", top_k=3)
    assert len(one) == 3 and all(mask not in p["sequence"] for p in one)
    many = fill([f"the {mask} of the river.", f"a city {mask} the sea."], top_k=2)
    assert [len(p) for p in many] == [2, 2]


def test_text_generation(tmp_path, wiki_jsonl):
    from transformers import pipeline

    out = train("pretrain_clm.py", tmp_path / "clm", f"data.train_file={wiki_jsonl}", *TINY_TEXT, TINY_GPT2)
    generate = pipeline("text-generation", model=out)
    text = generate("the history of the", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("the history of the") and len(text) > len("the history of the")
    batch = generate(["a river", "the city"], max_new_tokens=3, do_sample=False)
    assert [b[0]["generated_text"][: len(p)] for b, p in zip(batch, ["a river", "the city"])] == ["a river", "the city"]


def test_text_classification_of_pairs(tmp_path, mlm_checkpoint):
    import pandas as pd
    from transformers import pipeline

    texts = toy_texts(80, seed=3)
    rows = [{"premise": texts[i], "hypothesis": " ".join(texts[i].split()[:5]) if i % 2 else texts[40 + i], "label": i % 2}
            for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    out = train("finetune_text.py", tmp_path / "cls", f"model.name_or_path={mlm_checkpoint}",
                f"data.train_file={tmp_path / 'pairs.csv'}", "data.text_column=premise", "data.text_pair_column=hypothesis",
                "data.k_per_class=null", "data.validation_per_class=4", "data.max_length=64")
    classify = pipeline("text-classification", model=out, top_k=None)
    pair = classify({"text": "the cat sat on a mat.", "text_pair": "the cat sat."})
    assert {p["label"] for p in pair} == {"0", "1"} and sum(p["score"] for p in pair) == pytest.approx(1.0, abs=1e-5)
    pairs = classify([{"text": "a dog ran.", "text_pair": "a dog."}, {"text": "two birds sang.", "text_pair": "rivers flow."}])
    assert [len(p) for p in pairs] == [2, 2]


@pytest.fixture(scope="module", params=[1, 3], ids=["grayscale", "rgb"])
def vision_checkpoint(request, tmp_path_factory):
    """A ViT fine-tuned on Fashion-MNIST, as one channel (the default) or as RGB."""
    channels = request.param
    out = train("finetune_vision.py", tmp_path_factory.mktemp(f"vit{channels}") / "run", TINY_VIT,
                f"image.num_channels={channels}", "data.k_per_class=2", "data.validation_per_class=1",
                "data.max_test_images=20", "eval.batch_size=20", "eval.load_best_at_end=false")
    return out, channels


def fashion_images(n):
    from nlp_ssl.data.images import load_fashion_mnist

    test = load_fashion_mnist("test", cache_dir=None)
    return [test[i]["image"] for i in range(n)]


def trained_probabilities(out, channels, pixels):
    """What the model computed in training on ``pixels`` (C×28×28 in [0, 1]), normalised as the run did."""
    from transformers import AutoConfig, ViTForImageClassification

    from nlp_ssl.data.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD
    from nlp_ssl.models.grayscale_vit import GrayscaleViTForImageClassification

    mean, std = FASHION_MNIST_MEAN[0], FASHION_MNIST_STD[0]
    cls = GrayscaleViTForImageClassification if channels == 1 else ViTForImageClassification
    assert AutoConfig.from_pretrained(out).num_channels == 3  # what pipelines feed
    model = cls.from_pretrained(out).eval()
    with torch.no_grad():
        return model(pixel_values=((pixels - mean) / std)[None]).logits.softmax(-1)[0]


def scores(predictions, model_config):
    by_label = {p["label"]: p["score"] for p in predictions}
    return torch.tensor([by_label[model_config.id2label[i]] for i in range(len(by_label))])


def test_image_classification_of_grayscale_and_rgb_images(vision_checkpoint, tmp_path):
    from PIL import Image
    from transformers import pipeline

    out, channels = vision_checkpoint
    classify = pipeline("image-classification", model=out, top_k=10)
    gray = fashion_images(1)[0]
    assert gray.mode == "L"
    as_gray = torch.tensor(np.asarray(gray), dtype=torch.float32)[None] / 255
    expected = trained_probabilities(out, channels, as_gray if channels == 1 else as_gray.expand(3, -1, -1))
    torch.testing.assert_close(scores(classify(gray), classify.model.config), expected, atol=1e-5, rtol=0)
    gray.save(tmp_path / "gray.png")
    torch.testing.assert_close(scores(classify(str(tmp_path / "gray.png")), classify.model.config), expected, atol=1e-5, rtol=0)
    arrays = classify([np.asarray(gray)[..., None], np.asarray(gray.convert("RGB"))])
    for predictions in arrays:
        torch.testing.assert_close(scores(predictions, classify.model.config), expected, atol=1e-5, rtol=0)

    # A colour photo: a grayscale model reads its luma (¼ R + ½ G + ¼ B), an RGB model its colours.
    rgb = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    pixels = torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1) / 255
    luma = (0.25 * pixels[0] + 0.5 * pixels[1] + 0.25 * pixels[2])[None]
    expected = trained_probabilities(out, channels, luma if channels == 1 else pixels)
    torch.testing.assert_close(scores(classify(Image.fromarray(rgb, "RGB")), classify.model.config), expected,
                               atol=1e-5, rtol=0)
