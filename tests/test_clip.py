"""The open_clip wrapper: local weight formats load exactly and strictly, nothing is unpickled, fine-tuning and
checkpoints work, the demo model fits its size budget. Tiny architectures keep this fast on 2 CPU cores."""
import json
import os
import pickle

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from rsdemo.checkpoint import load, save
from rsdemo.models.factory import build, create_model
from rsdemo.training.step import TrainStep

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
TINY_RN = {"embed_dim": 32,
           "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
           "text_cfg": TINY["text_cfg"]}
TEXTS = ["a red house next to a river", "two planes on a runway", "green trees", "a harbour with boats"]


def clip(pretrained=None, arch=TINY, **kw):
    cfg = {"arch": "clip", "pretrained": None if pretrained is None else str(pretrained), **kw}
    if arch is not None:
        cfg["clip_config"] = arch
    return build(cfg, "test-clip").eval()


@pytest.fixture(scope="module")
def reference():
    """An open_clip model as a release would ship it, and its normalised outputs on fixed inputs."""
    torch.manual_seed(1)
    m = open_clip.CLIP(**TINY).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tok = open_clip.SimpleTokenizer(context_length=16)(TEXTS)
    with torch.no_grad():
        out = F.normalize(m.encode_image(x), dim=-1), F.normalize(m.encode_text(tok), dim=-1)
    return m.state_dict(), x, out


def same_outputs(model, reference):
    _, x, (img, txt) = reference
    with torch.no_grad():
        return torch.equal(model.encode_image(x), img) and torch.equal(model.encode_text(TEXTS), txt)


def remoteclip_file(state, d):       # RemoteCLIP-*.pt: a plain state dict
    torch.save(state, d / "RemoteCLIP-tiny.pt")
    return d / "RemoteCLIP-tiny.pt"


def georsclip_file(state, d):        # RS5M_*.pt: a DDP save wrapped in {"state_dict": ...}
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, d / "RS5M_tiny.pt")
    return d / "RS5M_tiny.pt"


def safetensors_file(state, d):
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "tiny.safetensors"))
    return d / "tiny.safetensors"


@pytest.mark.parametrize("write", [remoteclip_file, georsclip_file, safetensors_file])
def test_weight_files_load_exactly(write, reference, tmp_path):
    path = write(reference[0], tmp_path)
    assert same_outputs(clip(path), reference)
    assert not same_outputs(clip(None), reference)   # the check can fail: random init differs


def test_hub_layout_folder_defines_the_architecture(reference, tmp_path):
    d = tmp_path / "open_clip_tiny"
    d.mkdir()
    torch.save(reference[0], d / "open_clip_pytorch_model.bin")
    (d / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY, "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                              "std": list(open_clip.OPENAI_DATASET_STD)}}))
    m = clip(d, arch=None)                           # no architecture in our config: the folder's is used
    assert same_outputs(m, reference)
    assert m.config.clip_config == TINY and m.config.normalize == "clip" and m.config.image_size == 32
    # the saved checkpoint carries the architecture: it rebuilds with the folder gone
    ck = save(m, tmp_path / "ft.safetensors")
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    assert same_outputs(load(ck), reference)


def test_strict_keys(reference, tmp_path):
    state = dict(reference[0])
    missing = {k: v for k, v in state.items() if k != "text_projection"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing\.pt.*missing 1: \['text_projection'\]"):
        clip(tmp_path / "missing.pt")
    torch.save({**state, "visual.extra.weight": torch.zeros(2)}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"extra\.pt.*unexpected 1: \['visual\.extra\.weight'\]"):
        clip(tmp_path / "extra.pt")
    wide = {**TINY, "embed_dim": 64}                 # right names, wrong shapes: another architecture
    with pytest.raises(ValueError, match=r"RemoteCLIP-tiny\.pt.*wrong shape"):
        clip(remoteclip_file(state, tmp_path), arch=wide)
    with pytest.raises(ValueError, match="no such file or folder"):
        clip(tmp_path / "nowhere.pt")


class Payload:
    """Unpickling this would run a shell command: weights_only loading must refuse it before that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_arbitrary_objects_are_never_unpickled(how, reference, tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    obj = {"state_dict": {**reference[0], "x": Payload(marker)}}
    if how == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)          # only writes the payload, never runs it
    else:
        torch.save(obj, path)
    with pytest.raises(ValueError, match=r"evil\.pt.*refused"):
        clip(path)
    assert not marker.exists()


def test_hub_offline_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)   # read at import time by huggingface_hub itself
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"hf-hub:nobody/no-such-clip.*unreachable.*local"):
        clip("hf-hub:nobody/no-such-clip", arch=None)


def test_infonce_finetune_and_checkpoint_roundtrip(reference, tmp_path):
    m = clip(remoteclip_file(reference[0], tmp_path)).train()
    x = reference[1].repeat(2, 1, 1, 1) + 0.1 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        out = TrainStep(m)(x, TEXTS, TEXTS)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0] * 0.8, losses
    m.eval()
    with torch.no_grad():
        a = m.score(x, TEXTS)
        b = load(save(m, tmp_path / "ft.safetensors")).score(x, TEXTS)
        c = load(save(m, tmp_path / "ft16.safetensors", half=True)).score(x, TEXTS)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-2) and not torch.equal(a, c)


def test_logit_scale_is_capped_at_100():
    m = clip()
    with torch.no_grad():
        m.model.logit_scale.fill_(10.0)
    out = TrainStep(m)(torch.zeros(2, 3, 32, 32), TEXTS[:2], TEXTS[:2])
    assert abs(float(out["logit_scale"]) - 100) < 1e-3


def test_clip_tiny_fits_15mb_in_fp16(tmp_path):
    m = create_model("clip-tiny")
    assert sum(p.numel() for p in m.parameters()) <= 7.5e6
    assert save(m, tmp_path / "tiny.safetensors", half=True).stat().st_size <= 15e6


@pytest.mark.parametrize("arch,grid", [(TINY, (2, 2)), (TINY_RN, (2, 2))], ids=["vit", "modified-resnet"])
def test_explain_patch_map(arch, grid):
    torch.manual_seed(0)
    m = clip(arch=arch)
    x = torch.randn(3, arch["vision_cfg"]["image_size"], arch["vision_cfg"]["image_size"])
    ex = m.explain(x, TEXTS[0])
    sim = ex.maps["patch_sim"]
    assert sim.shape == grid and np.isfinite(sim).all() and np.abs(sim).max() <= 1 + 1e-5
    assert ex.tokens[:2] == ["a", "red"]
    with torch.no_grad():
        assert abs(ex.score - float(m.score(x[None], TEXTS[0]))) < 1e-5


def test_image_size_comes_from_the_vision_config():
    assert clip().config.image_size == 32
    with pytest.raises(ValueError, match="image_size"):
        clip(image_size=64)
