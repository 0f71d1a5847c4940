"""Shared encoders: a CNN giving multi-scale feature maps (strides 8, 16, 32) and a BiGRU text encoder.

Random init by default; pretrained image weights load from a local file (config "pretrained": path), so nothing
is fetched at run time.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def _conv_bn(cin, cout, stride=1, k=3):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """Residual block of the slim CNN."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = _conv_bn(cin, cout, stride)
        self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.b(self.a(x)) + self.skip(x))


class ImageBackbone(nn.Module):
    """`resnet18` (torchvision) or `slim` (a 4-stage residual CNN, ~0.7M parameters, for CPU demos).

    forward(x) -> [f8, f16, f32], feature maps at strides 8, 16 and 32; `channels` gives their widths.
    """

    def __init__(self, name: str = "resnet18", pretrained: str | None = None):
        super().__init__()
        self.kind = name
        if name == "resnet18":
            import torchvision

            r = torchvision.models.resnet18(weights=None)
            if pretrained:
                from .clip import read_state  # safetensors, or torch.load(weights_only=True); ValueError
                state = read_state(pretrained)
                r.load_state_dict(state, strict=True)
            self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
            self.stages = nn.ModuleList([r.layer2, r.layer3, r.layer4])
            self.channels = [128, 256, 512]
        elif name == "slim":
            w = [24, 48, 96, 192]
            self.stem = nn.Sequential(_conv_bn(3, 16, 2), _Block(16, w[0], 2))
            self.stages = nn.ModuleList([_Block(w[0], w[1], 2), _Block(w[1], w[2], 2), _Block(w[2], w[3], 2)])
            self.channels = w[1:]
            if pretrained:
                from .clip import read_state
                self.load_state_dict(read_state(pretrained))
        else:
            raise ValueError(f"unknown image backbone {name!r} (resnet18, slim)")

    def forward(self, x):
        x = self.stem(x)
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


def encode_batch(vocab, texts: list[str], max_len: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, T] (0-padded) and lengths [B]; an empty text becomes one <unk> so every row has a token."""
    seqs = [(vocab.encode(t)[:max_len] or [1]) for t in texts]
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs])


class TextBackbone(nn.Module):
    """Word embedding + bidirectional GRU. forward(ids, lengths) -> word features [B, T, dim] and mask [B, T]."""

    def __init__(self, vocab_size: int, dim: int = 512, word_dim: int = 300, layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, dim // 2, layers, batch_first=True, bidirectional=True)
        self.dim = dim

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor):
        x = self.embed(ids)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        mask = torch.arange(ids.shape[1], device=ids.device)[None] < lengths.to(ids.device)[:, None]
        return out, mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)
