"""A ViT classifier of grayscale images, saved as a ViT of RGB images.

Hugging Face pipelines hand every image to a model as RGB (transformers' ``load_image`` converts each
PIL image, file or URL), and a ViT refuses any channel count but its own, so a one-channel classifier
saved as trained fails in ``pipeline("image-classification")``. The model of a grayscale run trains
on one channel and is saved with its patch projection spread over R, G and B by ¼, ½, ¼ (the luma of
YCoCg): on a gray image the saved model computes what training computed, and it sees a colour image
through its luma. The three weights are powers of two, so the trained projection is read back bit for
bit (``(R + B) + G``): a reload of the best model, or fine-tuning from a saved one, starts exactly
where training stopped. The accelerate state that a resume reads keeps the one-channel weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from transformers import AutoConfig, ViTForImageClassification

from nlp_ssl.errors import ConfigError

#: Share of R, G and B in the luma that a saved grayscale model reads.
LUMA = (0.25, 0.5, 0.25)
PROJECTION = "embeddings.patch_embeddings.projection.weight"


def spread_to_rgb(weight: torch.Tensor) -> torch.Tensor:
    """A one-channel patch projection ``(out, 1, p, p)`` as the RGB one ``(out, 3, p, p)`` that reads luma."""
    return torch.cat([weight * share for share in LUMA], dim=1)


def gather_from_rgb(weight: torch.Tensor, where: str) -> torch.Tensor:
    """The one-channel projection that :func:`spread_to_rgb` saved, exactly; refuses a model trained on colour."""
    gray = (weight[:, 0:1] + weight[:, 2:3]) + weight[:, 1:2]
    if not torch.equal(spread_to_rgb(gray), weight):
        raise ConfigError(f"{where} is a ViT of colour images (its patch projection does not read luma); "
                          f"set image.num_channels=3 to use it")
    return gray


def _weights(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    from transformers.utils import cached_file

    index = cached_file(path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    if index is None:
        return load_file(cached_file(path, "model.safetensors"))
    shards = sorted(set(json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"].values()))
    return {k: v for shard in shards for k, v in load_file(cached_file(path, shard)).items()}


def one_channel_state(path: str, config) -> dict[str, torch.Tensor] | None:
    """The weights of the checkpoint at ``path`` for a model with ``config``: with the trained one-channel
    projection when it is the RGB save of a grayscale ViT and ``config`` has one channel; else None
    (the checkpoint loads as it is)."""
    if config.model_type != "vit" or config.num_channels != 1 or AutoConfig.from_pretrained(path).num_channels == 1:
        return None
    state = _weights(path)
    for key in [k for k in state if k.endswith(PROJECTION)]:
        state[key] = gather_from_rgb(state[key], f"model.name_or_path {path}")
    return state


def from_checkpoint(model_class, path: str, config, **kwargs):
    """``model_class.from_pretrained(path, config=config)``, reading an RGB save into a one-channel ``config``."""
    state = one_channel_state(path, config)
    if state is None:
        return model_class.from_pretrained(path, config=config, **kwargs)
    return model_class.from_pretrained(None, config=config, state_dict=state, **kwargs)


class GrayscaleViTForImageClassification(ViTForImageClassification):
    """Trains on one channel; saves (and reloads) as the RGB ViT that pipelines can feed."""

    def save_pretrained(self, save_directory, *args, state_dict: dict | None = None, **kwargs):
        state = dict(self.state_dict() if state_dict is None else state_dict)
        state = {k: spread_to_rgb(v) if k.endswith(PROJECTION) else v for k, v in state.items()}
        config = copy.deepcopy(self.config)
        config.num_channels = 3
        with torch.device("meta"):
            rgb = ViTForImageClassification(config)
        return rgb.save_pretrained(save_directory, *args, state_dict=state, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, state_dict=None, **kwargs):
        path = pretrained_model_name_or_path
        if path is not None and state_dict is None:
            if config is None:
                config = AutoConfig.from_pretrained(path)
                config.num_channels = 1
            state_dict = one_channel_state(str(path), config)
            path = None if state_dict is not None else path
        return super().from_pretrained(path, *args, config=config, state_dict=state_dict, **kwargs)
