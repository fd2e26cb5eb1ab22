"""The image transforms the vision collators apply (torch ops and PIL only).

torchvision is not required: resizing, cropping and flipping are done on tensors, and randomness
comes from a ``torch.Generator`` that the caller passes in. The collators seed one per example
(:func:`example_generator`, from the seed, the epoch and the image's own bytes), so an image gets the
same crop, rotation or mask whatever batch it lands in, and new ones every epoch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from nlp_ssl.errors import ConfigError, DataError

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)  # ITU-R 601, the weights PIL's convert("L") uses


def luminance(x: torch.Tensor) -> torch.Tensor:
    """``x`` (1 or 3 × H × W, in [0, 1]) as one grey channel, weighted as PIL weighs RGB."""
    return x if x.shape[0] == 1 else (x * _LUMA).sum(0, keepdim=True)


def _pil_to_8bit(image: Image.Image) -> Image.Image:
    """Bring 16-bit and float images into 8 bits by scaling, not clipping as ``convert("L")`` would."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        values = values * (255.0 / 65535.0)
    elif image.mode == "F" and values.max(initial=0) <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), mode="L")


def pil_to_channels(image: Image.Image, num_channels: int) -> Image.Image:
    """Any PIL mode to ``"L"`` (1 channel) or ``"RGB"`` (3 channels).

    Transparent images (RGBA, LA, P with transparency) are composited onto black, so a
    transparent pixel reads as background rather than as whatever colour it happened to store.
    """
    if num_channels not in (1, 3):
        raise ConfigError(f"num_channels must be 1 or 3, got {num_channels}")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _pil_to_8bit(image)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    target = "L" if num_channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def image_to_tensor(image, num_channels: int) -> torch.Tensor:
    """A PIL image, an ``H×W[×C]`` uint8 numpy array, or a ``[C×]H×W`` tensor → float ``C×H×W`` in [0, 1].

    Tensors are raw pixels (uint8 0..255, or float 0..1), never already normalised; a 4-channel
    tensor is treated as RGBA and premultiplied by its alpha, like PIL images.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise DataError(f"image: numpy arrays must be uint8 H×W or H×W×C, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        image = pil_to_channels(image, num_channels)
        array = np.asarray(image, dtype=np.uint8)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.tensor(array, dtype=torch.float32).div_(255.0)
    if not isinstance(image, torch.Tensor):
        raise DataError(f"image: expected a PIL image, numpy array or tensor, got {type(image).__name__}")
    x = image.detach().cpu()
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise DataError(f"image: tensor must be H×W or C×H×W with C in 1, 3, 4; got shape {tuple(image.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[0] == 4:
        x = x[:3] * x[3:]
    if x.shape[0] == 1 and num_channels == 3:
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 3 and num_channels == 1:
        x = luminance(x)
    elif num_channels not in (1, 3):
        raise ConfigError(f"num_channels must be 1 or 3, got {num_channels}")
    return x.contiguous()


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``C×H×W`` to ``C×size×size`` (antialiased bilinear); a no-op when already that size."""
    if x.shape[-2:] == (size, size):
        return x
    return torch.nn.functional.interpolate(
        x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]


def random_resized_crop_box(
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.67, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop covering ``scale`` of the area with aspect ratio in ``ratio``.

    Tries ten draws, then falls back to the largest centred crop whose ratio is within bounds.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _check_stats(name: str, values: Sequence[float], num_channels: int) -> torch.Tensor:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * num_channels
    if len(values) != num_channels:
        raise ConfigError(f"{name} needs 1 or {num_channels} values (one per channel), got {values}")
    return torch.tensor(values).view(-1, 1, 1)


class ImageTransform:
    """Image → normalised float tensor ``C×S×S`` for a ViT with ``num_channels`` inputs.

    Eval (``train=False``): convert the channels, resize to ``image_size×image_size`` (non-square
    images are stretched, keeping all of their content), normalise. Train: a random resized crop
    (``scale``, ``ratio``) then a horizontal flip with probability ``flip_prob``, both drawn from
    the ``generator`` passed to each call, so a collator controls the randomness.
    ``mean``/``std`` default to 0.5 per channel (pixels mapped to [-1, 1]).
    """

    def __init__(
        self,
        image_size: int,
        num_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        train: bool = False,
        scale: tuple[float, float] = (0.67, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
    ):
        if int(image_size) <= 0:
            raise ConfigError(f"image_size must be positive, got {image_size}")
        if num_channels not in (1, 3):
            raise ConfigError(f"num_channels must be 1 or 3, got {num_channels}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        if not 0 <= flip_prob <= 1:
            raise ConfigError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.image_size = int(image_size)
        self.num_channels = num_channels
        self.mean = _check_stats("mean", (0.5,) if mean is None else mean, num_channels)
        self.std = _check_stats("std", (0.5,) if std is None else std, num_channels)
        if (self.std <= 0).any():
            raise ConfigError(f"std must be positive, got {self.std.flatten().tolist()}")
        self.train = train
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.flip_prob = flip_prob

    def __call__(self, image, generator: torch.Generator | None = None) -> torch.Tensor:
        x = image_to_tensor(image, self.num_channels)
        if self.train:
            if generator is None:
                raise ConfigError("ImageTransform(train=True) needs a torch.Generator for its random crop and flip")
            top, left, h, w = random_resized_crop_box(x.shape[1], x.shape[2], generator, self.scale, self.ratio)
            x = resize(x[:, top : top + h, left : left + w], self.image_size)
            if float(torch.rand((), generator=generator)) < self.flip_prob:
                x = x.flip(-1)
        else:
            x = resize(x, self.image_size)
        return (x - self.mean) / self.std


# ----------------------------------------------------------------------------------------------
# Shared by the image collators


def image_fingerprint(image) -> np.ndarray:
    """The raw bytes of an image (plus its size and mode) as a uint8 array, to seed a batch's RNG."""
    if isinstance(image, Image.Image):
        header = f"{image.mode}:{image.width}x{image.height}".encode()
        body = image.tobytes()
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().contiguous().numpy()
        header, body = f"{array.dtype}:{array.shape}".encode(), array.tobytes()
    elif isinstance(image, np.ndarray):
        header, body = f"{image.dtype}:{image.shape}".encode(), np.ascontiguousarray(image).tobytes()
    else:
        raise DataError(f"image: expected a PIL image, numpy array or tensor, got {type(image).__name__}")
    return np.frombuffer(header + body, dtype=np.uint8)


def example_generator(seed: int, epoch: int, image, stream: int = 0) -> torch.Generator:
    """A torch.Generator for one example: seeded from ``(seed, epoch, stream)`` and the image's bytes.

    The image's content is its identity, as the token collators use the tokens: no index column is
    needed, the draw does not depend on which batch, worker or resume position the image comes in,
    and a new epoch gives new draws (dynamic augmentation and masking). ``stream`` separates
    independent draws for the same image (its augmentation vs an auxiliary task's rotation).
    """
    digest = hashlib.blake2b(digest_size=8)
    for number in (seed, epoch, stream):
        digest.update(int(number).to_bytes(8, "little", signed=True))
    digest.update(image_fingerprint(image).tobytes())
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def images_of(examples: Sequence[dict], key: str = "image") -> list:
    """The ``key`` field of every example, with a DataError naming the field when it is missing."""
    if len(examples) == 0:
        raise DataError("collator: got an empty batch")
    try:
        return [example[key] for example in examples]
    except (KeyError, TypeError):
        raise DataError(f"collator: example is missing the field {key!r}") from None
