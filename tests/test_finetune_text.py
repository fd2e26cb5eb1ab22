"""Fine-tuning with the auxiliary LM loss (tasks/classification.py), recipes/finetune_text.py and study_text.py."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
)

from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives.clm import clm_aux_keys
from nlp_ssl.objectives.mlm import MLMAuxKeys
from nlp_ssl.objectives.registry import OBJECTIVES
from nlp_ssl.objectives.text_classification import ClassificationCollator
from nlp_ssl.tasks.causal_lm import CausalLMAux, causal_lm_head
from nlp_ssl.tasks.classification import SequenceClassificationTask
from nlp_ssl.tasks.masked_lm import MaskedLMAux, masked_lm_head
from nlp_ssl.text.text_finetuning import FinetuneConfig
from tests.helpers import ROOT, run_recipe, toy_texts, write_jsonl

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
#: One thread per recipe subprocess: the tests run side by side, and oversubscribed threads run several times slower.
ENV = {"OMP_NUM_THREADS": "1"}


def tiny_bert_folder(tmp_path, tokenizer):
    """A 'pretrained' BertForMaskedLM saved with its tokenizer, as pretrain_mlm.py leaves it."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, **NO_DROPOUT)
    model = BertForMaskedLM(config)
    with torch.no_grad():  # a non-trivial MLM head, so a re-initialised one would be noticed
        model.cls.predictions.transform.dense.weight.normal_(0, 0.5)
        model.cls.predictions.bias.normal_(0, 1.0)
    folder = tmp_path / "mlm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def encode(tokenizer, texts, labels):
    return [{"input_ids": ids, "label": y}
            for ids, y in zip(tokenizer(texts, truncation=True, max_length=48)["input_ids"], labels)]


def test_mlm_aux_loss_matches_the_pretrained_mlm_model(tmp_path, wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    folder, pretrained = tiny_bert_folder(tmp_path, tok)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    head = masked_lm_head(classifier, AutoModelForMaskedLM.from_pretrained(folder))
    task = SequenceClassificationTask(classifier, MaskedLMAux(head), aux_weight=0.3).eval()
    assert task.loss_weights == {"cls": 1.0, "lm": 0.3}
    # The head is BERT's transform then its decoder, whose weight is the classifier's own embedding matrix, not a copy.
    assert head[-1].weight is classifier.bert.embeddings.word_embeddings.weight
    batch = ClassificationCollator(tok, MLMAuxKeys(tok, 0.4, seed=3))(encode(tok, toy_texts(4), [0, 2, 1, 2]))
    assert (batch["lm_input_ids"] != batch["input_ids"]).any() and (batch["lm_labels"] != -100).any()
    with torch.no_grad():
        out = task(**batch)
        # By hand: the original pretrained MLM model, on the masked copy, with its own mean loss.
        reference = pretrained(input_ids=batch["lm_input_ids"], attention_mask=batch["attention_mask"], labels=batch["lm_labels"])
        n_masked = (batch["lm_labels"] != -100).sum()
        cls_logits = classifier(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    lm_sum, lm_count = out["losses"]["lm"]
    assert lm_count == n_masked == task.count_items(batch)["lm"]
    torch.testing.assert_close(lm_sum / lm_count, reference.loss, rtol=1e-5, atol=1e-5)
    # The classifier sees the unmasked input.
    cls_sum, cls_count = out["losses"]["cls"]
    assert cls_count == 4 == task.count_items(batch)["cls"]
    torch.testing.assert_close(cls_sum, torch.nn.functional.cross_entropy(cls_logits, batch["labels"], reduction="sum"))


def test_clm_aux_loss_matches_hand_computation(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64, pad_token_id=tok.pad_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, num_labels=3)
    classifier = GPT2ForSequenceClassification(config).eval()
    task = SequenceClassificationTask(classifier, CausalLMAux(causal_lm_head(classifier)))  # GPT-1's default λ = 0.5
    assert task.loss_weights == {"cls": 1.0, "lm": 0.5}
    assert sum(p.numel() for p in task.parameters()) == sum(p.numel() for p in classifier.parameters())  # no new weights
    examples = [{"input_ids": ids[1:-1], "label": y}
                for ids, y in zip(tok(toy_texts(3, seed=1), truncation=True, max_length=48)["input_ids"], [1, 0, 2])]
    batch = ClassificationCollator(tok, clm_aux_keys)(examples)
    assert (batch["attention_mask"] == 0).any(), "the test needs padding"
    with torch.no_grad():
        out = task(**batch)
        hidden = classifier.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = hidden @ classifier.transformer.wte.weight.T
        total, n = 0.0, 0
        for row, length in enumerate(batch["attention_mask"].sum(1).tolist()):
            for t in range(length - 1):  # position t predicts token t + 1
                total += -torch.log_softmax(logits[row, t], -1)[batch["input_ids"][row, t + 1]]
                n += 1
        # Same numbers from transformers' own LM model, whose lm_head is tied to wte.
        lm = GPT2LMHeadModel(config).eval()
        lm.transformer.load_state_dict(classifier.transformer.state_dict())
        hf = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["lm_labels"]).loss
    lm_sum, lm_count = out["losses"]["lm"]
    assert lm_count == n == task.count_items(batch)["lm"]
    torch.testing.assert_close(lm_sum, total, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(lm_sum / lm_count, hf, rtol=1e-5, atol=1e-5)
    cls_logits = classifier(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(out["losses"]["cls"][0],
                               torch.nn.functional.cross_entropy(cls_logits, batch["labels"], reduction="sum"))


def _train(task, batches, steps=3):
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-2)
    for step in range(steps):
        batch = batches[step % len(batches)]
        out = task(**batch)
        counts = task.count_items(batch)
        loss = sum(w * out["losses"][n][0] / counts[n] for n, w in task.loss_weights.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in task.model.state_dict().items()}


@pytest.mark.parametrize("aux", ["mlm", "clm"])
def test_lambda_zero_is_plain_finetuning(tmp_path, wordpiece_tokenizer, aux):
    tok = wordpiece_tokenizer
    if aux == "mlm":
        folder, _ = tiny_bert_folder(tmp_path, tok)

        def make():
            torch.manual_seed(5)  # the new classifier head starts the same in both runs
            return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)

        head = lambda m: MaskedLMAux(masked_lm_head(m, AutoModelForMaskedLM.from_pretrained(folder)))  # noqa: E731
        keys = MLMAuxKeys(tok, 0.3)
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64, num_labels=3,
                            pad_token_id=tok.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        torch.manual_seed(1)
        state = GPT2ForSequenceClassification(config).state_dict()

        def make():
            model = GPT2ForSequenceClassification(config)
            model.load_state_dict(state)
            return model

        head = lambda m: CausalLMAux(causal_lm_head(m))  # noqa: E731
        keys = clm_aux_keys
    texts = toy_texts(8, seed=2)
    batches = [ClassificationCollator(tok, keys)(encode(tok, texts[i:i + 4], [0, 1, 2, 1])) for i in (0, 4)]

    # Plain fine-tuning: the mean cross-entropy of transformers' model, nothing else.
    plain = make()
    optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    for step in range(3):
        batch = batches[step % 2]
        logits = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model = make()
    zero = SequenceClassificationTask(model, head(model), aux_weight=0.0)
    assert zero.aux is None and zero.loss_weights == {"cls": 1.0}
    assert sum(p.numel() for p in zero.parameters()) == sum(p.numel() for p in zero.model.parameters())
    got = _train(zero, batches)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
    # The comparison is not vacuous: with λ > 0 the same steps end elsewhere.
    model = make()
    other = _train(SequenceClassificationTask(model, head(model), aux_weight=0.5), batches)
    assert any(not torch.allclose(other[n], v, atol=1e-4) for n, v in plain.state_dict().items())


def test_bad_task_arguments():
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(config)
    with pytest.raises(ConfigError, match="needs a causal model"):
        OBJECTIVES["clm"].aux.loss(model, None)
    with pytest.raises(ConfigError, match="'bogus' is not one of"):
        FinetuneConfig(aux_lm="bogus")
    with pytest.raises(ConfigError, match="aux_weight must be >= 0"):
        SequenceClassificationTask(model, aux_weight=-1.0)


# ------------------------------------------------------------------------------ end to end (slow)


def assert_nothing_trained(out):
    """The run stopped before training: no model, no results (the trainer may leave a run lock)."""
    assert not (out / "all_results.json").exists() and not list(out.glob("**/*.safetensors"))

TINY = ["train.max_steps=6", "eval.every=3", "log.every=2", "impl.micro_batch_size=8", "train.global_batch_size=8",
        "eval.batch_size=32",
        "data.validation_per_class=2", "data.max_length=48", "log.progress_bar=false"]
CLASSES = ("People", "Geography", "Mathematics")


@pytest.fixture(scope="module")
def pretrained_mlm(tmp_path_factory, wiki_jsonl):
    out = tmp_path_factory.mktemp("pretrained") / "mlm"
    proc = run_recipe(
        "pretrain_mlm.py", f"data.train_file={wiki_jsonl}", f"output_dir={out}", "data.block_size=64", "impl.micro_batch_size=8",
        "train.global_batch_size=8", "eval.every=6", "tokenizer.vocab_size=2000", "log.progress_bar=false", "train.max_steps=6",
        "data.validation_split=0.1", "log.report_to=[]", env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def topic_files(tmp_path_factory):
    """3 classes of real wiki articles: 12 per class to train from, 5 per class to test on."""
    from nlp_ssl.data.wiki import load_wiki_corpus

    corpus = load_wiki_corpus()
    folder = tmp_path_factory.mktemp("topics")
    files = {}
    for split, n in (("en_train", 12), ("en_test", 5)):
        topics = corpus[split]["topic"][:]
        picked = [i for c in CLASSES for i in [j for j, t in enumerate(topics) if t == c][:n]]
        rows = corpus[split].select(picked)
        files[split] = write_jsonl(folder / f"{split}.jsonl", [{"body": r["text"], "topic": r["topic"]} for r in rows])
    return files


def data_args(files):
    return [f"data.train_file={files['en_train']}", f"data.test_file={files['en_test']}", "data.text_column=body",
            "data.label_column=topic"]


@pytest.mark.slow
def test_recipe_transfers_encoder_and_saves_a_pipeline_ready_classifier(tmp_path, pretrained_mlm, topic_files):
    out = tmp_path / "cls"
    proc = run_recipe("finetune_text.py", f"model.name_or_path={pretrained_mlm}", f"output_dir={out}", *data_args(topic_files),
                      *TINY, "data.k_per_class=8", "optim.learning_rate=1.0e-5", "finetune.aux_lm=auto", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["aux_lm"] == "mlm" and results["train_examples"] == 24 and results["test_examples"] == 15
    assert 0.0 <= results["test_accuracy"] <= 1.0 and 0.0 <= results["test_macro_f1"] <= 1.0
    assert results["best_step"] in (3, 6) and "last_test_accuracy" in results

    # Encoder weights come from the pretrained checkpoint (4 steps at lr 1e-5 move them < 1e-3).
    before, after = load_file(str(pretrained_mlm / "model.safetensors")), load_file(str(out / "model.safetensors"))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    # The default MLM model: ModernBERT, whose classifier mean-pools the tokens MLM trained.
    assert type(model).__name__ == "ModernBertForSequenceClassification" and model.config.classifier_pooling == "mean"
    shared = [k for k in before if k.startswith(model.base_model_prefix + ".")]
    assert len(shared) > 10
    for name in shared:
        assert (after[name] - before[name]).abs().max() < 1e-3, name
    fresh = AutoModelForSequenceClassification.from_config(model.config).state_dict()
    first_layer = [k for k in shared if ".0." in k and after[k].ndim == 2]
    assert first_layer and all((fresh[k] - after[k]).abs().max() > 1e-2 for k in first_layer)
    assert not any(k.startswith("decoder.") for k in after), "the aux MLM decoder must not be saved in the classifier"

    from transformers import pipeline

    assert model.config.id2label == dict(enumerate(sorted(CLASSES))) and model.config.label2id["People"] == 2
    classify = pipeline("text-classification", model=str(out))
    prediction = classify("The mountain range lies north of the river valley.")[0]
    assert prediction["label"] in CLASSES and 0.0 <= prediction["score"] <= 1.0


@pytest.mark.slow
def test_recipe_gpt2_checkpoint_with_clm_aux(tmp_path, topic_files):
    """A GPT-2 checkpoint (pad token = EOS) fine-tunes with the CLM aux loss and loads in a pipeline."""
    from nlp_ssl.data.wiki import load_wiki_corpus
    from nlp_ssl.text.tokenizers import train_tokenizer

    texts = load_wiki_corpus()["en_train"].select(range(300))["text"]
    tok = train_tokenizer("bytelevel_bpe", texts, 600, tmp_path / "tok")
    tok.pad_token = None  # like GPT-2's own tokenizer
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64)
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "cls"
    proc = run_recipe("finetune_text.py", f"model.name_or_path={folder}", f"output_dir={out}", *data_args(topic_files), *TINY,
                      "data.k_per_class=8", "finetune.aux_lm=auto", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["aux_lm"] == "clm" and "eval_lm_loss" in results
    from transformers import pipeline

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert isinstance(model, GPT2ForSequenceClassification) and model.config.pad_token_id is not None
    assert pipeline("text-classification", model=str(out))(["a short text", "a longer text about the sea"])[1]["label"] in CLASSES


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_label", "label column 'topic' has no label in 2 row(s): line 2, line 4"),
        ("no_column", "label column 'category' not found; available columns: body, topic"),
        ("too_few", "'Mathematics' has 3"),
    ],
)
def test_bad_input_fails_with_one_clear_line(tmp_path, topic_files, case, expected):
    rows = [json.loads(line) for line in topic_files["en_train"].read_text().splitlines()]
    extra = []
    if case == "missing_label":
        rows[1]["topic"] = None
        del rows[3]["topic"]
    elif case == "no_column":
        extra = ["data.label_column=category"]
    else:
        rows = [r for r in rows if r["topic"] != "Mathematics"] + [r for r in rows if r["topic"] == "Mathematics"][:3]
        extra = ["data.k_per_class=4"]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    proc = run_recipe("finetune_text.py", "model.name_or_path=unused", f"output_dir={tmp_path}/out", f"data.train_file={path}",
                      "data.text_column=body", "data.label_column=topic", *TINY, *extra, env=ENV)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last and str(path) in last, last
    assert_nothing_trained(tmp_path / "out")


@pytest.mark.slow
def test_study_smoke_writes_table_plot_and_curves(tmp_path, pretrained_mlm, topic_files):
    from nlp_ssl.config import load_config
    from nlp_ssl.study.baselines import tfidf_logreg
    from nlp_ssl.text.text_finetuning import FinetuneTextConfig, load_splits, split_pool

    out = tmp_path / "study"
    args = [*data_args(topic_files), *TINY, "train.max_steps=4", "eval.every=2"]
    proc = run_recipe("study_text.py", f"pretrained={pretrained_mlm}", f"output_dir={out}", "k_per_class=[4]", "seeds=[0]",
                      "methods=[scratch,pretrained_aux,tfidf]", "finetune_args=[" + ",".join(args) + "]", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert {r["run"] for r in results["runs"]} == {"scratch_k4_s0", "pretrained_aux_k4_s0", "tfidf_k4_s0"}
    assert set(results["summary"]) == {"scratch", "pretrained_aux", "tfidf"}
    # The fine-tuning runs are subprocesses of recipes/finetune_text.py: their records are their all_results.json.
    for run in ("scratch_k4_s0", "pretrained_aux_k4_s0"):
        finished = json.loads((out / "runs" / run / "all_results.json").read_text())
        record = next(r for r in results["runs"] if r["run"] == run)
        assert record["test_accuracy"] == finished["test_accuracy"] and record["steps"] == finished["steps"] == 4
    assert json.loads((out / "runs" / "pretrained_aux_k4_s0" / "all_results.json").read_text())["aux_lm"] == "mlm"
    # TF-IDF is fitted on exactly the rows a fine-tuning run of k=4, seed 0 trains on.
    yaml = ROOT / "recipes" / "configs" / "finetune_text.yaml"
    ft = load_config(FinetuneTextConfig, yaml, [*args, "data.k_per_class=4", "seed=0"])
    splits, names, where = load_splits(ft.data)
    train, _ = split_pool(splits["pool"], names, ft.data, 0, where)
    expected = tfidf_logreg(train["text"][:], train["label"][:], splits["test"]["text"][:], splits["test"]["label"][:], seed=0)
    cell = results["summary"]["tfidf"]["4"]["test_accuracy"]
    assert cell == {"mean": pytest.approx(expected["accuracy"]), "std": 0.0, "n": 1}
    gain = results["gains"]["tfidf"]["4"]["per_seed"]["0"]
    scratch = next(r for r in results["runs"] if r["method"] == "scratch")["test_accuracy"]
    assert gain == pytest.approx(expected["accuracy"] - scratch)
    table = (out / "results.md").read_text()
    assert "| TF-IDF + logistic regression |" in table and "| pretrained_aux_k4_s0 |" in table
    assert "Best checkpoint vs last step" in table
    for png in ("accuracy_vs_labels.png", "curves/scratch_k4_s0.png", "curves/pretrained_aux_k4_s0.png", "curves/k4.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_xlm_mlm_aux_uses_the_tied_pretrained_projection(tmp_path, wordpiece_tokenizer):
    from transformers import XLMConfig, XLMForSequenceClassification, XLMWithLMHeadModel

    tok = wordpiece_tokenizer
    torch.manual_seed(0)
    config = XLMConfig(vocab_size=len(tok), emb_dim=32, n_layers=1, n_heads=2, max_position_embeddings=64, dropout=0.0,
                       attention_dropout=0.0, pad_index=tok.pad_token_id, num_labels=3)
    pretrained = XLMWithLMHeadModel(config).eval()
    with torch.no_grad():
        pretrained.pred_layer.proj.bias.normal_(0, 1.0)
    pretrained.save_pretrained(tmp_path / "xlm")
    classifier = XLMForSequenceClassification.from_pretrained(tmp_path / "xlm").eval()
    head = masked_lm_head(classifier, XLMWithLMHeadModel.from_pretrained(tmp_path / "xlm"))
    assert head.weight is classifier.transformer.embeddings.weight
    task = SequenceClassificationTask(classifier, MaskedLMAux(head))
    batch = ClassificationCollator(tok, MLMAuxKeys(tok, 0.4))(encode(tok, toy_texts(3), [0, 1, 2]))
    with torch.no_grad():
        lm_sum, lm_count = task(**batch)["losses"]["lm"]
        reference = pretrained(input_ids=batch["lm_input_ids"], attention_mask=batch["attention_mask"],
                               labels=batch["lm_labels"]).loss
    torch.testing.assert_close(lm_sum / lm_count, reference, rtol=1e-5, atol=1e-5)


def test_modernbert_mlm_aux_uses_its_pretrained_head_and_mean_pooling(tmp_path, wordpiece_tokenizer):
    from transformers import ModernBertForMaskedLM, ModernBertForSequenceClassification

    from nlp_ssl.models import ModelConfig, build_model, special_token_fields

    tok = wordpiece_tokenizer
    torch.manual_seed(0)
    pretrained = build_model(ModelConfig(arch="modernbert", size="tiny"), "masked_lm", vocab_size=len(tok),
                             **special_token_fields(tok))
    assert isinstance(pretrained, ModernBertForMaskedLM) and pretrained.config.classifier_pooling == "mean"
    assert pretrained.config.pad_token_id == tok.pad_token_id and pretrained.config.cls_token_id == tok.cls_token_id
    with torch.no_grad():  # a non-trivial head, so a re-initialised one would be noticed
        pretrained.head.dense.weight.normal_(0, 0.5)
    pretrained.save_pretrained(tmp_path / "mb")
    classifier = ModernBertForSequenceClassification.from_pretrained(tmp_path / "mb", num_labels=3).eval()
    head = masked_lm_head(classifier, ModernBertForMaskedLM.from_pretrained(tmp_path / "mb"))
    assert head[1].weight is classifier.model.embeddings.tok_embeddings.weight
    task = SequenceClassificationTask(classifier, MaskedLMAux(head)).eval()
    batch = ClassificationCollator(tok, MLMAuxKeys(tok, 0.4))(encode(tok, toy_texts(3), [0, 1, 2]))
    pretrained.eval()
    with torch.no_grad():
        lm_sum, lm_count = task(**batch)["losses"]["lm"]
        reference = pretrained(input_ids=batch["lm_input_ids"], attention_mask=batch["attention_mask"],
                               labels=batch["lm_labels"]).loss
        # Mean pooling: padding the batch further does not change the logits.
        logits = classifier(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        pad = torch.full((3, 5), tok.pad_token_id)
        padded = classifier(input_ids=torch.cat([batch["input_ids"], pad], 1),
                            attention_mask=torch.cat([batch["attention_mask"], torch.zeros_like(pad)], 1)).logits
    torch.testing.assert_close(lm_sum / lm_count, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded, logits, rtol=1e-4, atol=1e-4)


# ------------------------------------------------- sentence pairs, regression, bad labelled data

@pytest.fixture(scope="module")
def tiny_bert_checkpoint(tmp_path_factory):
    """A tiny BERT with a WordPiece tokenizer that holds every toy word, saved as a checkpoint folder."""
    from nlp_ssl.text.tokenizers import train_tokenizer

    folder = tmp_path_factory.mktemp("pairckpt") / "bert"
    tok = train_tokenizer("wordpiece", toy_texts(300), 400, folder)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                               **NO_DROPOUT)).save_pretrained(folder)
    return folder


def pair_rows(n, seed, regression=False):
    """Pairs of toy sentences; the label says whether (or how much) the second repeats the first."""
    import random

    rng = random.Random(seed)
    texts = toy_texts(2 * n, seed=seed)
    rows = []
    for i in range(n):
        same = i % 2 == 0
        b = " ".join(texts[i].split()[:6]) if same else texts[n + i]
        label = round(rng.uniform(3, 5), 2) if (regression and same) else round(rng.uniform(0, 2), 2) if regression else int(same)
        rows.append({"premise": texts[i], "hypothesis": b, "score" if regression else "label": label})
    return rows


PAIR = ["data.text_column=premise", "data.text_pair_column=hypothesis"]


@pytest.mark.slow
def test_pair_classifier_loads_in_a_pipeline_that_takes_text_and_text_pair(tmp_path, tiny_bert_checkpoint):
    import pandas as pd
    from transformers import AutoTokenizer, pipeline

    pd.DataFrame(pair_rows(40, 0)).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(pair_rows(10, 1)).to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "cls"
    proc = run_recipe("finetune_text.py", f"model.name_or_path={tiny_bert_checkpoint}", f"output_dir={out}", *TINY, *PAIR,
                      f"data.train_file={tmp_path / 'train.csv'}", f"data.test_file={tmp_path / 'test.csv'}",
                      "finetune.aux_lm=mlm", "data.k_per_class=null", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_examples"] == 36 and results["test_examples"] == 10 and "eval_lm_loss" in results
    a, b = "the cat sat on a mat.", "two dogs ran."
    classify = pipeline("text-classification", model=str(out), top_k=None)
    got = {p["label"]: p["score"] for p in classify({"text": a, "text_pair": b})}
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    enc = tok(a, b, return_tensors="pt")
    assert (enc["token_type_ids"] == 1).any()  # the pipeline's input is the pair, with segment ids
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)[0]
    assert set(got) == {"0", "1"}
    assert got["1"] == pytest.approx(probs[1].item(), abs=1e-5) and got["0"] == pytest.approx(probs[0].item(), abs=1e-5)
    # A different second sentence changes the prediction: the pair reached the model.
    other = {p["label"]: p["score"] for p in classify({"text": a, "text_pair": "every bird sang loudly near old stone walls."})}
    assert other["1"] != pytest.approx(got["1"], abs=1e-7)
    card = (out / "README.md").read_text()
    assert "model-index:" in card and "type: accuracy" in card and "pipeline(\"text-classification\"" in card


@pytest.mark.slow
def test_regression_end_to_end_scores_pearson_and_spearman_of_the_saved_model(tmp_path, tiny_bert_checkpoint):
    from scipy.stats import pearsonr, spearmanr
    from transformers import AutoTokenizer

    train, test = (write_jsonl(tmp_path / "train.jsonl", pair_rows(40, 0, True)),
                   write_jsonl(tmp_path / "test.jsonl", pair_rows(12, 1, True)))
    out = tmp_path / "reg"
    proc = run_recipe("finetune_text.py", f"model.name_or_path={tiny_bert_checkpoint}", f"output_dir={out}", *TINY, *PAIR,
                      f"data.train_file={train}", f"data.test_file={test}", "data.label_column=score",
                      "finetune.problem_type=regression",
                      "data.k_per_class=null", "data.validation_per_class=8", "finetune.aux_lm=mlm", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_examples"] == 32 and results["problem_type"] == "regression" and "eval_lm_loss" in results
    assert "best_loss" in results  # the best checkpoint is chosen by validation MSE
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    tok = AutoTokenizer.from_pretrained(out)
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    enc = tok([r["premise"] for r in rows], [r["hypothesis"] for r in rows], padding=True, truncation="longest_first",
              max_length=48, return_tensors="pt")
    with torch.no_grad():
        preds = model(**enc).logits[:, 0].numpy()
    gold = [r["score"] for r in rows]
    assert results["test_pearsonr"] == pytest.approx(pearsonr(preds, gold)[0], abs=1e-4)
    assert results["test_spearmanr"] == pytest.approx(spearmanr(preds, gold)[0], abs=1e-4)
    assert "type: spearmanr" in (out / "README.md").read_text()


def _bad_files(tmp_path, case):
    import pandas as pd

    rows = [{"body": t, "topic": ["a", "b"][i % 2]} for i, t in enumerate(toy_texts(20))]
    if case == "one_class":
        return write_jsonl(tmp_path / "train.jsonl", [{**r, "topic": "a"} for r in rows]), []
    if case == "mixed_csv":
        rows[5]["topic"] = "7"
        pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
        return tmp_path / "train.csv", []
    if case == "bad_jsonl":
        path = write_jsonl(tmp_path / "train.jsonl", rows)
        lines = path.read_text().splitlines()
        lines[6] = lines[6][:-3]
        path.write_text("\n".join(lines) + "\n")
        return path, []
    if case == "int_text":
        pd.DataFrame([{**r, "body": i} for i, r in enumerate(rows)]).to_parquet(tmp_path / "train.parquet")
        return tmp_path / "train.parquet", []
    rows[4]["topic"] = "high"  # regression with a label that is no number
    rows = [{**r, "topic": r["topic"] if r["topic"] == "high" else 0.5} for r in rows]
    return write_jsonl(tmp_path / "train.jsonl", rows), ["finetune.problem_type=regression", "data.k_per_class=null"]


@pytest.mark.slow
@pytest.mark.parametrize("case, expected", [
    ("one_class", "the labelled data has 1 class (['a']); classification needs at least 2"),
    ("mixed_csv", "label column 'topic' mixes class names and ids: 'a' in row 1 and '7' in row 6"),
    ("bad_jsonl", "line 7: not valid JSON"),
    ("int_text", "text column 'body' holds non-text values (e.g. 0)"),
    ("not_a_float", "label column 'topic' line 5: 'high' is not a number (regression)"),
])
def test_bad_labelled_data_fails_with_one_line_before_training(tmp_path, case, expected):
    path, extra = _bad_files(tmp_path, case)
    proc = run_recipe("finetune_text.py", "model.name_or_path=unused", f"output_dir={tmp_path}/out", f"data.train_file={path}",
                      "data.text_column=body", "data.label_column=topic", *TINY, *extra, env=ENV)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0] and str(path) in errors[0], proc.stderr[-2000:]
    assert_nothing_trained(tmp_path / "out")
