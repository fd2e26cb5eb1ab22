"""Two augmented views per image for SimCLR (Chen et al. 2020), or two images of one case for MICLe
(Azizi et al. 2021): the batches of :class:`~nlp_ssl.tasks.contrastive.ContrastiveTask`.

SimCLR's augmentation, sized for any image: a random resized crop, a horizontal flip, brightness and
contrast jitter (plus saturation jitter and random grayscale for colour images; one-channel images get
no colour jitter), and a Gaussian blur. The per-example generator (:func:`example_generator`, from
seed, epoch and the image's bytes) draws everything, so a view does not depend on the batch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nlp_ssl.config import check_ranges
from nlp_ssl.data.image_transforms import ImageTransform, example_generator, image_fingerprint, images_of, luminance
from nlp_ssl.errors import ConfigError, DataError


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _chance(generator: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=generator)) < p


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` (C×H×W) blurred by a separable Gaussian of ``sigma`` pixels (kernel ±3σ, reflected edges).

    Each pass is a product with a banded H×H (or W×W) matrix that folds the reflection in: on small
    images far cheaper than padding and convolving.
    """
    return _blur_matrix(x.shape[-2], sigma, x.dtype) @ x @ _blur_matrix(x.shape[-1], sigma, x.dtype).T


def _blur_matrix(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, min(math.ceil(3 * sigma), size - 1))
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-0.5 * (offsets.to(dtype) / sigma) ** 2)
    weights = weights / weights.sum()
    source = torch.arange(size)[:, None] + offsets[None, :]
    source = source.abs()  # reflect at 0 (edge pixel not repeated) ...
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # ... and at size - 1
    return torch.zeros(size, size, dtype=dtype).scatter_add_(1, source, weights.expand(size, -1).contiguous())


@dataclass
class ViewAugmentation:
    """SimCLR's augmentation. The defaults suit small images (28×28 Fashion-MNIST): SimCLR's ImageNet
    crop scale (0.08, 1) leaves a few pixels of such an image, and its blur sigma (0.1, 2) px is for 224 px."""

    #: Area range of the random resized crop (aspect ratio 3/4 to 4/3).
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    flip_prob: float = 0.5
    #: Probability of the brightness/contrast (and, in colour, saturation) jitter.
    jitter_prob: float = 0.8
    #: Jitter strengths: each factor is drawn from [1 - s, 1 + s].
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    #: Colour images only: probability of turning a view gray.
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    #: Blur sigma range in pixels of the model's input.
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 1.0])

    def __post_init__(self):
        check_ranges(self, flip_prob="[0, 1]", jitter_prob="[0, 1]", brightness="[0, 1]", contrast="[0, 1]",
                     saturation="[0, 1]", grayscale_prob="[0, 1]", blur_prob="[0, 1]")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"crop_scale must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        if len(self.blur_sigma) != 2 or not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"blur_sigma must be [min, max] with 0 < min <= max, got {self.blur_sigma}")

    def jitter(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Brightness, contrast, then (colour only) saturation and random grayscale, on pixels in [0, 1]."""
        if _chance(generator, self.jitter_prob):
            x = (x * _uniform(generator, 1 - self.brightness, 1 + self.brightness)).clamp(0, 1)
            mean = luminance(x).mean()
            x = ((x - mean) * _uniform(generator, 1 - self.contrast, 1 + self.contrast) + mean).clamp(0, 1)
            if x.shape[0] == 3:
                gray = luminance(x)
                x = ((x - gray) * _uniform(generator, 1 - self.saturation, 1 + self.saturation) + gray).clamp(0, 1)
        if x.shape[0] == 3 and _chance(generator, self.grayscale_prob):
            x = luminance(x).expand(3, -1, -1).contiguous()
        return x


class TwoViewCollator:
    """Turn ``[{"image": ...}]`` into ``pixel_values`` (2B×C×S×S): rows 2i and 2i + 1 are two views of
    example i, its positives in :class:`~nlp_ssl.tasks.contrastive.ContrastiveTask`.

    With ``partners`` (:class:`GroupPartners`, MICLe), the second view is of another image of the
    example's group when it has one. ``augmentation=None`` gives plain resized, normalised images.
    """

    def __init__(
        self,
        image_size: int,
        num_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augmentation: ViewAugmentation | None = None,
        seed: int = 0,
        partners: GroupPartners | None = None,
    ):
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.partners = partners
        scale = tuple(augmentation.crop_scale) if augmentation else (1.0, 1.0)
        flip = augmentation.flip_prob if augmentation else 0.0
        # Crop and flip in [0, 1]; jitter and blur follow; the normalisation comes last.
        self.geometry = ImageTransform(image_size, num_channels, (0.0,), (1.0,), train=augmentation is not None,
                                       scale=scale, flip_prob=flip)
        self.normalise = ImageTransform(image_size, num_channels, mean, std)

    def set_epoch(self, epoch: int) -> None:
        """New views (and partners) every epoch; the trainer calls this."""
        self.epoch = int(epoch)

    def view(self, image, generator: torch.Generator) -> torch.Tensor:
        x = self.geometry(image, generator)
        aug = self.augmentation
        if aug is not None:
            x = aug.jitter(x, generator)
            if _chance(generator, aug.blur_prob):
                x = gaussian_blur(x, _uniform(generator, *aug.blur_sigma))
        return (x - self.normalise.mean) / self.normalise.std

    def pair(self, example: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = example["image"]
        generator = example_generator(self.seed, self.epoch, image)
        partner = self.partners.partner(example, generator) if self.partners is not None else image
        return self.view(image, generator), self.view(partner, generator)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        images_of(examples)  # a DataError naming the field when one is missing
        views = [v for example in examples for v in self.pair(example)]
        return {"pixel_values": torch.stack(views)}


class GroupPartners:
    """MICLe's positives: another image of the same group (a case, a patient) from ``dataset``.

    ``dataset`` is the split being collated and has a ``group_column``. For an example of group g,
    the partner is drawn uniformly among g's images whose bytes differ from the example's; an image
    alone in its group (or with a missing group) is its own partner, as in SimCLR.
    """

    def __init__(self, dataset, group_column: str, where: str = "data"):
        if group_column not in dataset.column_names:
            raise DataError(f"{where}: group column {group_column!r} not found; columns are {dataset.column_names}")
        self.dataset = dataset
        self.group_column = group_column
        rows: dict = defaultdict(list)
        for row, group in enumerate(dataset[group_column]):
            if group is not None:
                rows[group].append(row)
        self.rows = {group: np.asarray(members) for group, members in rows.items()}

    def partner(self, example: dict, generator: torch.Generator):
        if self.group_column not in example:
            raise DataError(f"collator: example is missing the group field {self.group_column!r}")
        image, members = example["image"], self.rows.get(example[self.group_column])
        if members is None or len(members) < 2:
            return image
        own = image_fingerprint(image)
        for i in torch.randperm(len(members), generator=generator).tolist():
            candidate = self.dataset[int(members[i])]["image"]
            if not np.array_equal(image_fingerprint(candidate), own):
                return candidate
        return image

    @property
    def groups_with_pairs(self) -> int:
        """Groups with at least two images."""
        return sum(len(members) > 1 for members in self.rows.values())
