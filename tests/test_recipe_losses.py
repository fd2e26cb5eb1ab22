"""Each pretraining recipe's first training losses on its tiny preset, pinned.

A refactor that moves code should not move numbers: every recipe runs a few steps on small data as a
subprocess, and its logged losses (``trainer_history.json``) must equal the values recorded at the
commit named below, within float noise. A change that is meant to change the numbers re-pins them:

    NLP_SSL_PIN_OUT=/tmp/pins.json python -m pytest -q -m slow tests/test_recipe_losses.py

writes the observed losses to that file (the tests then pass) to paste into ``PINS``.

The text recipes get fixed tokenizers (``tests/data/tokenizers``, trained by
``nlp_ssl.text.tokenizers.train_tokenizer`` on the ``wiki_jsonl`` documents): 🤗 tokenizers' WordPiece
and BPE trainers number tokens of equal frequency in hash-map order, so a freshly trained tokenizer
is not the same from one process to the next.
"""

import json
import os

import pytest

from tests.helpers import ROOT, run_recipe

pytestmark = pytest.mark.slow

#: Pinned at commit 93353ab (before the recipes moved into the library).
STEPS = 3
COMMON = [
    "log.progress_bar=false", "log.every=1", "save.every=100", "eval.every=100", "eval.batches=1", "log.report_to=[]",
    "optim.warmup_ratio=0.0", "optim.learning_rate=0.003", f"train.max_steps={STEPS}", "seed=0",
]
TEXT = ["data.validation_split=0.1", "impl.micro_batch_size=8", "train.global_batch_size=8"]
TOKENIZERS = ROOT / "tests" / "data" / "tokenizers"
WORDPIECE = f"tokenizer.name_or_path={TOKENIZERS / 'wordpiece'}"
#: Recipe, its arguments, and whether it trains on the ``wiki_jsonl`` fixture (600 built-in documents).
RUNS = {
    "mlm": ("pretrain_mlm.py", [*TEXT, "data.block_size=64", WORDPIECE], True),
    "clm": ("pretrain_clm.py", [*TEXT, "data.block_size=64",
                                   f"tokenizer.name_or_path={TOKENIZERS / 'bytelevel_bpe'}"], True),
    "bert_nsp": ("pretrain_bert.py", [*TEXT, "data.max_seq_length=64", "data.dupe_factor=1", "data.max_train_documents=200",
                                      WORDPIECE], True),
    "bert_sop": ("pretrain_bert.py", [*TEXT, "bert.sop=true", "data.max_seq_length=64", "data.dupe_factor=1",
                                      "data.max_train_documents=200", WORDPIECE], True),
    "xlm": ("pretrain_xlm.py", ["impl.micro_batch_size=8", "train.global_batch_size=8", "data.max_length=48",
                                "data.max_documents=200",
                                f"tokenizer.name_or_path={TOKENIZERS / 'bpe'}"], False),
    "vit_rotation": ("pretrain_vit.py", ["objective=rotation", "data.max_train_images=256", "data.validation_images=32",
                                         "impl.micro_batch_size=16", "train.global_batch_size=16"], False),
    "vit_simmim": ("pretrain_vit.py", ["objective=mim", "data.max_train_images=256", "data.validation_images=32",
                                       "impl.micro_batch_size=16", "train.global_batch_size=16"], False),
    "vit_simclr": ("pretrain_vit.py", [f"--config={ROOT / 'recipes' / 'configs' / 'pretrain_vit_simclr.yaml'}",
                                       "data.max_train_images=256", "data.validation_images=32", "impl.micro_batch_size=16",
                                       "train.global_batch_size=16", "eval.batch_size=16"], False),
    "vit_jigsaw": ("pretrain_vit.py", [f"--config={ROOT / 'recipes' / 'configs' / 'pretrain_vit_jigsaw.yaml'}",
                                       "data.max_train_images=256", "data.validation_images=32", "impl.micro_batch_size=16",
                                       "train.global_batch_size=16"], False),
}

#: name -> one dict per logged step: every ``train_*loss`` value in the history.
PINS: dict[str, list[dict[str, float]]] = {
    "bert_nsp": [{"train_loss": 7.599577903747559}, {"train_loss": 7.309698104858398}, {"train_loss": 7.2726287841796875}],
    "bert_sop": [{"train_loss": 7.613973140716553}, {"train_loss": 7.504100322723389}, {"train_loss": 7.613629341125488}],
    "clm": [{"train_loss": 6.441290855407715}, {"train_loss": 6.294925212860107}, {"train_loss": 6.143612384796143}],
    "mlm": [{"train_loss": 6.898063659667969}, {"train_loss": 6.815297603607178}, {"train_loss": 6.7296342849731445}],
    "vit_rotation": [{"train_loss": 1.408408284187317}, {"train_loss": 1.7127583026885986}, {"train_loss": 1.5729273557662964}],
    # Re-pinned when SimMIM masks became per-example and per-epoch (a batch's mask no longer depends on its neighbours).
    "vit_simmim": [{"train_loss": 0.8881320953369141}, {"train_loss": 0.8958230018615723}, {"train_loss": 1.0239596366882324}],
    "vit_simclr": [{"train_loss": 3.225259304046631}, {"train_loss": 3.3607211112976074}, {"train_loss": 3.265174150466919}],
    "vit_jigsaw": [{"train_loss": 4.639001369476318}, {"train_loss": 4.612775802612305}, {"train_loss": 4.713627815246582}],
    "xlm": [{"train_loss": 6.924055576324463}, {"train_loss": 6.973543643951416}, {"train_loss": 6.669076919555664}],
}


def first_losses(out) -> list[dict[str, float]]:
    history = json.loads((out / "trainer_history.json").read_text())
    rows = [{k: v for k, v in h.items() if k.startswith("train_") and k.endswith("loss")} for h in history if "train_loss" in h]
    return rows[:STEPS]


@pytest.mark.parametrize("name", list(RUNS))
def test_first_losses_match_the_pins(tmp_path, request, name):
    script, args, wiki = RUNS[name]
    data = [f"data.train_file={request.getfixturevalue('wiki_jsonl')}"] if wiki else []
    out = tmp_path / name
    proc = run_recipe(script, *data, f"output_dir={out}", *COMMON, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = first_losses(out)
    assert len(losses) == STEPS and all(row["train_loss"] > 0 for row in losses), losses
    if os.environ.get("NLP_SSL_PIN_OUT"):
        path = os.environ["NLP_SSL_PIN_OUT"]
        pins = json.loads(open(path).read()) if os.path.exists(path) else {}
        pins[name] = losses
        with open(path, "w") as f:
            json.dump(pins, f, indent=1, sort_keys=True)
        return
    assert [row.keys() for row in losses] == [row.keys() for row in PINS[name]]
    for got, want in zip(losses, PINS[name]):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), (name, losses)
