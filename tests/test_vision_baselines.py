"""The vision study's frozen-feature kNN: cosine neighbours of a frozen ViT's features, chosen on validation."""

import numpy as np
import pytest
from transformers import ViTConfig, ViTModel

from nlp_ssl.config import load_config
from nlp_ssl.data.image_splits import labelled_splits
from nlp_ssl.vision.image_finetuning import FinetuneVisionConfig
from nlp_ssl.vision.probes import frozen_knn, vit_features


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    config = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)
    out = tmp_path_factory.mktemp("vit") / "frozen"
    ViTModel(config, add_pooling_layer=False).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_frozen_knn_takes_cosine_neighbours_of_the_checkpoint_features(checkpoint, pooling):
    from sklearn.neighbors import KNeighborsClassifier

    ft = load_config(FinetuneVisionConfig, overrides=[
        "data.k_per_class=3", "data.validation_per_class=2", "data.max_test_images=60", "image.patch_size=7"])
    scores = frozen_knn(checkpoint, pooling)(ft)

    splits = labelled_splits(ft.data, ft.seed)
    x = {s: vit_features(checkpoint, list(splits[s]["image"]), ft.image, pooling) for s in ("train", "validation", "test")}
    y = {s: np.asarray(splits[s]["label"]) for s in x}
    # One neighbour by hand: the training image of highest cosine similarity.
    unit = {s: v / np.linalg.norm(v, axis=1, keepdims=True) for s, v in x.items()}
    nearest = y["train"][(unit["validation"] @ unit["train"].T).argmax(1)]
    assert scores["val_accuracy_by_neighbours"][1] == pytest.approx(np.mean(nearest == y["validation"]))
    assert set(scores["val_accuracy_by_neighbours"]) == {1, 3, 5, 10, 20}  # 30 training images
    best = max(scores["val_accuracy_by_neighbours"].items(), key=lambda item: (item[1], -item[0]))[0]
    assert scores["neighbours"] == best
    # The test score is sklearn's cosine kNN on the raw features at that number of neighbours.
    knn = KNeighborsClassifier(n_neighbors=best, metric="cosine", algorithm="brute").fit(x["train"], y["train"])
    assert scores["test_accuracy"] == pytest.approx(np.mean(knn.predict(x["test"]) == y["test"]))
    assert scores["test_examples"] == 60
