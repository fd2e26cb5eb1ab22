"""CLM collator, document-aware positions and the causal LM task against the HF model's own loss."""

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from nlp_ssl.data.text import tokenize_and_pack
from nlp_ssl.objectives.clm import CLMCollator, document_position_ids
from nlp_ssl.tasks.causal_lm import CausalLMTask
from nlp_ssl.text.tokenizers import train_tokenizer
from tests.helpers import toy_texts


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory):
    return train_tokenizer("bytelevel_bpe", toy_texts(300), 300, tmp_path_factory.mktemp("tok") / "bytelevel")


# --- CLM ----------------------------------------------------------------------------------------


def tiny_gpt2(tokenizer, attn="sdpa"):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    model.set_attn_implementation(attn)
    return model


def test_clm_plain_labels_are_inputs_with_pads_ignored(gpt2_tokenizer):
    tok = gpt2_tokenizer
    eos = tok.eos_token_id
    batch = CLMCollator(tok)([{"input_ids": [5, 6, eos, 7]}, {"input_ids": [8, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, eos, 7], [8, 9, tok.pad_token_id, tok.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, eos, 7], [8, 9, -100, -100]]
    assert "position_ids" not in batch


def test_clm_document_aware_positions_restart_after_each_eos(gpt2_tokenizer):
    tok = gpt2_tokenizer
    eos = tok.eos_token_id
    batch = CLMCollator(tok, document_aware=True, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, eos, 7, 8, eos, eos, 9]}, {"input_ids": [eos, 5, 6]}]
    )
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]]
    # EOS is predicted within its document; each later document's first token is not predicted.
    assert batch["labels"].tolist() == [[-100, 6, eos, -100, 8, eos, -100, -100], [-100, -100, 6] + [-100] * 5]
    assert "attention_mask" not in batch


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_clm_document_aware_logits_equal_each_document_run_alone(gpt2_tokenizer, attn):
    tok = gpt2_tokenizer
    docs = Dataset.from_dict({"text": toy_texts(12, seed=3)})
    blocks = tokenize_and_pack(docs, tok, "text", 48)
    examples = [blocks[i] for i in range(3)]
    model = tiny_gpt2(tok, attn)
    aware = CLMCollator(tok, document_aware=True)(examples)
    plain = CLMCollator(tok)(examples)
    task = CausalLMTask(model)
    with torch.no_grad():
        logits = model(input_ids=aware["input_ids"], position_ids=aware["position_ids"], use_cache=False).logits
        plain_logits = model(**{k: v for k, v in plain.items() if k != "labels"}).logits
        out = task(**aware)
    expected_sum, expected_count, n_docs = 0.0, 0, 0
    for row in range(len(examples)):
        starts = (aware["position_ids"][row] == 0).nonzero().squeeze(1).tolist() + [aware["input_ids"].shape[1]]
        n_docs += len(starts) - 1
        for start, end in zip(starts[:-1], starts[1:]):
            ids = aware["input_ids"][row : row + 1, start:end]
            with torch.no_grad():
                alone = model(input_ids=ids)
            torch.testing.assert_close(logits[row, start:end], alone.logits[0], atol=1e-5, rtol=1e-4)
            if end - start > 1:
                expected_sum += model(input_ids=ids, labels=ids).loss.item() * (end - start - 1)
                expected_count += end - start - 1
    assert n_docs > len(examples)  # the blocks really hold several documents
    # Without document awareness, a later document sees the earlier one, and its logits change.
    assert not torch.allclose(plain_logits, logits, atol=1e-3)
    loss, count = out["losses"]["loss"]
    assert int(count) == expected_count == int(task.count_items(aware)["loss"])
    assert loss.item() == pytest.approx(expected_sum, rel=1e-4)


def test_document_position_ids_ignore_separators_in_padding():
    ids = torch.tensor([[4, 1, 4, 1, 1, 1]])
    assert document_position_ids(ids, torch.tensor([3]), separator_id=1).tolist() == [[0, 1, 0, 0, 0, 0]]


def test_causal_lm_task_matches_gpt2_loss_with_padding(gpt2_tokenizer):
    model = tiny_gpt2(gpt2_tokenizer)
    batch = CLMCollator(gpt2_tokenizer)([{"input_ids": list(range(5, 25))}, {"input_ids": list(range(30, 41))}])
    task = CausalLMTask(model)
    with torch.no_grad():
        out = task(**batch)
        hf = model(**batch).loss
    loss, count = out["losses"]["loss"]
    assert int(count) == 19 + 10 == int(task.count_items(batch)["loss"])
    assert (loss / count).item() == pytest.approx(hf.item(), rel=1e-5)
    correct, total = out["metrics"]["accuracy"]
    assert 0 <= int(correct) <= int(total) == int(count)
