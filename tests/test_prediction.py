"""nlp_ssl.metrics.prediction.predict: the one prediction loop that text and vision fine-tuning score their test sets with."""

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

from nlp_ssl.data.images import load_digits_dataset
from nlp_ssl.metrics.prediction import predict
from nlp_ssl.objectives import ImageClassificationCollator


def test_image_predictions_are_the_models_argmax_in_dataset_order_and_modes_are_restored():
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=10, hidden_dropout_prob=0.3,
    ))
    with torch.no_grad():  # a head that tells the images apart, so predictions vary
        model.classifier.weight.normal_(0, 20.0)
    data = load_digits_dataset().select(range(37))
    collator = ImageClassificationCollator(8, num_channels=1)
    model.train()
    preds = predict(model, data, collator, batch_size=8, device="cpu")
    assert model.training  # the trainer keeps training after scoring the last model
    model.eval()
    with torch.no_grad():  # one batch of everything, by hand: batching must not change a prediction
        expected = model(pixel_values=collator(list(data))["pixel_values"]).logits.argmax(-1).numpy()
    assert preds.shape == (37,) and (preds == expected).all()
    assert len(set(preds.tolist())) > 1  # a constant would hide an ordering bug


def test_text_regression_head_gives_scores_not_class_ids():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=1,
    )).eval()
    rows = [{"input_ids": list(range(1, 3 + i % 5)), "label": float(i)} for i in range(11)]

    def collate(examples):
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in examples])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([e["label"] for e in examples])}

    from datasets import Dataset

    scores = predict(model, Dataset.from_list(rows), collate, batch_size=4, device="cpu")
    with torch.no_grad():
        one_by_one = [model(**{k: v for k, v in collate([r]).items() if k != "labels"}).logits[:, 0] for r in rows]
    expected = torch.cat(one_by_one).numpy()
    assert scores.dtype == np.float32 and np.allclose(scores, expected, atol=1e-5)
    assert not np.allclose(scores, np.round(scores))
