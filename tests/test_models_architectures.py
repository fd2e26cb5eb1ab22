"""The architecture table (nlp_ssl/models/architectures.py): every entry builds a tiny model whose
blocks, FLOPs fields, causality and MLM parts are what the entry says; layer-decay depths by name."""

import typing

import pytest
import torch

from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ARCHITECTURES, ModelConfig, architecture_of, build_model, preset_config
from nlp_ssl.models.architectures import block_depths, is_causal, mlm_parts, optimizer_groups
from nlp_ssl.models.builders import SIZE_PRESETS, Arch
from nlp_ssl.tasks.masked_lm import MaskedLMTask

TOKEN_FIELDS = dict(vocab_size=99, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
IMAGE_FIELDS = dict(image_size=28, patch_size=7, num_channels=1)


def tiny(arch: str, head: str):
    torch.manual_seed(0)
    fields = TOKEN_FIELDS if ARCHITECTURES[arch].inputs == "tokens" else IMAGE_FIELDS
    return build_model(ModelConfig(arch=arch, size="tiny"), head, **fields).eval()


def test_the_table_covers_every_arch_the_builders_accept():
    accepted = typing.get_args(Arch)
    assert set(accepted) <= set(ARCHITECTURES)
    assert all(ARCHITECTURES[arch].head_classes for arch in accepted)
    with pytest.raises(ConfigError, match=r"model.arch 'bart' is not one of \['bert', 'modernbert', 'gpt2', 'xlm', 'vit'\]"):
        preset_config("bart", "tiny")


CASES = [(arch, head) for arch, entry in ARCHITECTURES.items() for head in entry.head_classes]


@pytest.mark.parametrize(("arch", "head"), CASES, ids=[f"{a}-{h}" for a, h in CASES])
def test_every_entry_builds_a_tiny_model_that_matches_its_facts(arch, head):
    entry = ARCHITECTURES[arch]
    model = tiny(arch, head)
    layers, hidden, heads = SIZE_PRESETS["tiny"]
    # A grayscale ViT classifier is a subclass that saves as the plain class (nlp_ssl.models.grayscale_vit).
    assert type(model).__name__ == entry.head_classes[head] or type(model).__mro__[1].__name__ == entry.head_classes[head]
    assert architecture_of(model.config) is entry
    # The fields FLOPs read are the ones the preset set (a wrong name would build the 12-layer default).
    assert entry.dims(model.config) == (layers, hidden, heads)
    assert is_causal(model.config) == entry.causal

    # Layer decay. In the encoder, the embeddings lead (depth 0), then the preset's blocks 1..layers,
    # then what follows them (a final norm) at layers + 1; every head parameter is at layers + 1.
    base_names = [name for name, _ in model.base_model.named_parameters()]
    depths = [block_depths(base_names, model.config)[name] for name in base_names]
    first_block = depths.index(1)
    assert first_block > 0 and set(depths[:first_block]) == {0} and 0 not in depths[first_block:]
    assert set(depths) - {0, layers + 1} == set(range(1, layers + 1))
    if layers + 1 in depths:
        assert set(depths[depths.index(layers + 1):]) == {layers + 1}
    in_encoder = {id(p) for p in model.base_model.parameters()}
    full = block_depths([name for name, _ in model.named_parameters()], model.config)
    assert all(full[name] == layers + 1 for name, p in model.named_parameters() if id(p) not in in_encoder)

    if head == "masked_lm":  # the sparse loss's encoder and head give the model's own logits
        encoder, lm_head = mlm_parts(model)
        ids = torch.randint(3, 99, (2, 7))
        with torch.no_grad():
            torch.testing.assert_close(lm_head(encoder(input_ids=ids).last_hidden_state), model(input_ids=ids).logits)
    else:
        assert mlm_parts(model) is None or entry.mlm_encoder is not None


#: Parameter name -> layer-decay depth, for each preset architecture (tiny: 2 blocks, so the head is 3).
EXPECTED_DEPTHS = {
    ("bert", "masked_lm"): {
        "bert.embeddings.word_embeddings.weight": 0, "bert.embeddings.LayerNorm.weight": 0,
        "bert.encoder.layer.1.output.dense.weight": 2, "cls.predictions.transform.dense.weight": 3,
    },
    ("modernbert", "masked_lm"): {
        "model.embeddings.tok_embeddings.weight": 0, "model.layers.0.attn.Wqkv.weight": 1,
        "model.final_norm.weight": 3, "head.dense.weight": 3,
    },
    ("gpt2", "causal_lm"): {
        "transformer.wte.weight": 0, "transformer.wpe.weight": 0, "transformer.h.1.mlp.c_fc.weight": 2,
        "transformer.ln_f.weight": 3,
    },
    ("xlm", "masked_lm"): {
        "transformer.position_embeddings.weight": 0, "transformer.layer_norm_emb.weight": 0,
        "transformer.ffns.0.lin1.weight": 1, "transformer.layer_norm2.1.weight": 2, "pred_layer.proj.bias": 3,
    },
    # The old rule (first number in the name) put SimMIM's decoder.0 at block 1.
    ("vit", "masked_image_modeling"): {
        "vit.embeddings.cls_token": 0, "vit.embeddings.patch_embeddings.projection.weight": 0,
        "vit.layers.1.mlp.fc1.weight": 2, "vit.layernorm.weight": 3, "decoder.0.weight": 3,
    },
}


@pytest.mark.parametrize(("arch", "head"), list(EXPECTED_DEPTHS), ids=[a for a, _ in EXPECTED_DEPTHS])
def test_layer_decay_depths_by_name(arch, head):
    model = tiny(arch, head)
    depths = block_depths([name for name, _ in model.named_parameters()], model.config)
    assert {name: depths[name] for name in EXPECTED_DEPTHS[arch, head]} == EXPECTED_DEPTHS[arch, head]


def test_an_auxiliary_head_is_never_mistaken_for_a_block():
    """ModernBERT's aux MLM head is nn.Sequential(head, decoder): ``lm_head.0.`` is not block 0."""
    config = preset_config("modernbert", "tiny")
    names = ["model.embeddings.tok_embeddings.weight", "model.layers.0.mlp.Wi.weight", "model.layers.1.mlp.Wi.weight",
             "lm_head.0.dense.weight"]
    assert block_depths(names, config) == dict(zip(names, [0, 1, 2, 3]))
    # A model type the table does not know keeps the generic rule: the first number is the block.
    generic = ["embed.weight", "blocks.0.w", "blocks.1.w", "out.w"]
    assert block_depths(generic, None) == dict(zip(generic, [0, 1, 2, 3]))


def test_optimizer_groups_decay_each_depth_and_spare_biases_and_norms():
    task = MaskedLMTask(tiny("modernbert", "masked_lm"))
    named = dict(task.named_parameters())
    groups = optimizer_groups(task.named_parameters(), task.model.config, 1e-3, 0.1, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(named)  # every parameter in exactly one group
    assert lr_of[id(named["model.model.embeddings.tok_embeddings.weight"])] == pytest.approx(1e-3 * 0.5**3)
    assert lr_of[id(named["model.model.layers.0.attn.Wqkv.weight"])] == pytest.approx(1e-3 * 0.5**2)
    assert lr_of[id(named["model.model.layers.1.attn.Wqkv.weight"])] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(named["model.head.dense.weight"])] == pytest.approx(1e-3)
    assert wd_of[id(named["model.model.layers.0.attn.Wqkv.weight"])] == 0.1
    assert wd_of[id(named["model.model.final_norm.weight"])] == 0.0
    flat = optimizer_groups(task.named_parameters(), task.model.config, 1e-3, 0.1)
    assert {g["lr"] for g in flat} == {1e-3} and len(flat) == 2  # decay and no-decay only
