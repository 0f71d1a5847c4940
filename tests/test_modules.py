"""Checks specific to the papers' modules (what the registry-wide tests cannot know)."""
import numpy as np
import pytest
import torch
from PIL import Image

from rsdemo import losses
from rsdemo.data import synthetic as S
from rsdemo.models.dove import DTGA, dtga_flops, transformer_flops
from rsdemo.models.ssjdn import ssm as suppression
from rsdemo.models.factory import create_model


@pytest.fixture(scope="module")
def sample():
    w = next(iter(S.generate(1, seed=9)))
    return Image.fromarray(w.image), w.captions[0]


def _m(name, **kw):
    torch.manual_seed(0)
    return create_model(name, **kw).eval()


def test_mvsa_saliency_is_a_distribution(sample):
    ex = _m("amfmn-slim").explain(*sample)
    assert ex.maps["mvsa"].sum() == pytest.approx(1.0, abs=1e-4) and (ex.maps["mvsa"] >= 0).all()
    assert ex.notes["word_weights"].sum() == pytest.approx(1.0, abs=1e-4)


def test_ccnet_tam_and_cfm(sample):
    ex = _m("ccnet-slim").explain(*sample)
    T = len(ex.tokens)
    tam = ex.maps["tam"]
    assert tam.shape[0] == T and np.allclose(tam.reshape(T, -1).sum(1), 1, atol=1e-4)  # per word, over regions
    assert ex.cfm.shape == (T, tam.shape[1] * tam.shape[2])
    assert ex.cfm.sum() == pytest.approx(1.0, abs=1e-4) and (ex.cfm >= 0).all()         # joint over (word, region)


def test_ccnet_stride8_regions(sample):
    """region_stride 8: twice the grid on each side, the maps still distributions, and the rerank path (state)
    scores as the full forward does."""
    m16, m8 = _m("ccnet-slim"), _m("ccnet-slim", region_stride=8)
    t16, t8 = m16.explain(*sample).maps["tam"], m8.explain(*sample).maps["tam"]
    assert t8.shape[1:] == (2 * t16.shape[1], 2 * t16.shape[2])
    assert np.allclose(t8.reshape(t8.shape[0], -1).sum(1), 1, atol=1e-4)
    x = m8.preprocess([sample[0], sample[0].transpose(Image.Transpose.ROTATE_90)])
    texts = [sample[1], "a lake"]
    with torch.no_grad():
        full = m8(x, texts)["scores"]
        state = m8.score_state(m8.image_state(x), texts)
    assert torch.allclose(full, state, atol=1e-5)
    with pytest.raises(ValueError, match="region_stride must be 8 or 16"):
        create_model("ccnet-slim", region_stride=4)


def test_ssjdn_sem_and_ssm(sample):
    m = _m("ssjdn-slim")
    ex = m.explain(*sample)
    for stride, side in ((8, 16), (16, 8), (32, 4)):
        sem, ssm = ex.maps[f"sem{stride}"], ex.maps[f"ssm{stride}"]
        assert sem.shape == ssm.shape == (side, side)
        assert (sem >= 0).all() and (sem <= 1).all() and (ssm >= 0).all() and (ssm <= 1).all()
    # SSM's map is the strength of the suppression stride 16 received: the finer scale's salience resized, so it
    # is bright where the multiplier (1 - strength) took the features down
    x = m.preprocess([sample[0]])
    feats = m.backbone(x)
    ps = [p(f) for p, f in zip(m.proj, feats)]
    sal8 = m.sem_up[0](ps[0])
    expect = torch.nn.functional.interpolate(sal8, size=ps[1].shape[-2:], mode="bilinear", align_corners=False)
    assert np.allclose(ex.maps["ssm16"], expect[0, 0].detach().numpy(), atol=1e-5)
    mult = suppression(sal8, ps[1].shape[-2:])[0, 0].detach().numpy()
    assert np.allclose(ex.maps["ssm16"], 1 - mult, atol=1e-5)


def test_dove_roam_maps(sample):
    ex = _m("dove-slim").explain(*sample)
    roam = ex.maps["roam"]
    assert roam.shape[0] == 6 and np.allclose(roam.reshape(6, -1).sum(1), 1, atol=1e-4)
    assert ex.maps["roam_text"].sum() == pytest.approx(1.0, abs=1e-4)  # the text's convex mix of the regions


def test_dove_roam_scale_lets_the_text_pick_slots(sample):
    """With the scaled dot product the text's weights over the K slots start (and, in the committed checkpoints,
    stay) all but uniform, so roam_text is the same map for every query; with roam_scale they are a softmax of
    cosines at that scale: the same state, sharper weights, and the score split still sums to the score."""
    def weights(m, texts):
        st = m.state_tensors(m.image_state(m.one_image(sample[0])))
        return st, m._final(st["global"], st["slots"], m._text_global(*m._words(texts)))[1][0]

    texts = [sample[1], "a white roof", "many trees"]
    torch.manual_seed(0)
    old = create_model("dove-slim", score_map=True).eval()
    sharp = create_model("dove-slim", score_map=True, roam_scale=30.0).eval()
    sharp.load_state_dict(old.state_dict())
    with torch.no_grad():
        _, b0 = weights(old, texts)
        st, b1 = weights(sharp, texts)
        assert torch.allclose(b1.sum(-1), torch.ones(3), atol=1e-5)
        assert (b1.amax(-1) > b0.amax(-1)).all()
        slots = torch.nn.functional.normalize(st["slots"][0], dim=-1)
        t = torch.nn.functional.normalize(sharp._text_global(*sharp._words(texts)), dim=-1)
        assert torch.allclose(b1, (30.0 * t @ slots.T).softmax(-1), atol=1e-5)
        images = [sample[0]] * 3
        split = sharp.score_maps(images, texts).sum((1, 2))
        assert torch.allclose(split, sharp.score(images, texts).diagonal(), atol=1e-5)

def test_dtga_is_lighter_than_a_transformer_layer():
    T, d, G = 20, 256, 4
    assert dtga_flops(T, d, G) * 50 < transformer_flops(T, d)
    # counted FLOPs match what the module does: no projections, 2 attention products each way
    m = DTGA(d, G)
    words, mask = torch.randn(2, T, d), torch.ones(2, T, dtype=torch.bool)
    assert m(words, mask).shape == (2, T, d)
    assert sum(p.numel() for p in m.parameters()) == G * d


def test_class_contrastive_and_semantic_margin():
    v = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0], [0, 1]]), dim=-1)
    good = losses.class_contrastive(v, v, torch.tensor([0, 0, 1]))
    bad = losses.class_contrastive(v, v, torch.tensor([0, 1, 1]))
    assert good < 0.01 < bad
    m = losses.semantic_margin(["a", "a", "b", None], base=0.2, low=0.05)
    k = 2 / 12  # 2 of the 12 off-diagonal pairs share a label
    assert m[0, 1] == pytest.approx(0.2 - 0.15 * k) and m[0, 2] == pytest.approx(0.2)
    assert m[3, 3] == pytest.approx(0.2)  # unknown labels never agree, not even with themselves
