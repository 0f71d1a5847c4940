"""The model contract, checked for every registered model (a new config is picked up with no new test code)."""
import numpy as np
import pytest
import torch
from PIL import Image

from rsdemo import explain as E
from rsdemo.checkpoint import load, load_model, save
from rsdemo.data import synthetic as S
from rsdemo.models.factory import create_model
from rsdemo.models.registry import arch_class, list_models, model_config
from rsdemo.training.step import TrainStep

MODELS = list_models()
# Full-size CLIP towers (ViT-B-32, RN50) are covered for shape/contract but too slow to train on 2 CPU cores here
HEAVY = {n for n in MODELS if model_config(n).get("clip_model")}


@pytest.fixture(scope="module")
def batch():
    worlds = list(S.generate(8, seed=5))
    images = [Image.fromarray(w.image) for w in worlds]
    caps = [w.captions[0] for w in worlds]
    labels = [w.label for w in worlds]
    return images, caps, labels


def _model(name, **kw):
    torch.manual_seed(0)
    return create_model(name, **kw).eval()


@pytest.mark.parametrize("name", MODELS)
def test_contract(name, batch):
    images, caps, _ = batch
    m = _model(name)
    with torch.no_grad():
        x = m.preprocess(images[:3])
        e_img, e_txt = m.encode_image(x), m.encode_text(caps[:4])
        s = m.score(x, caps[:4])
    d = m.embed_dim
    assert e_img.shape == (3, d) and e_txt.shape == (4, d) and s.shape == (3, 4)
    assert torch.allclose(e_img.norm(dim=-1), torch.ones(3), atol=1e-4)
    assert torch.allclose(e_txt.norm(dim=-1), torch.ones(4), atol=1e-4)
    assert torch.isfinite(s).all()
    if m.separable:  # stage 1 is exact for separable models
        assert torch.allclose(s, e_img @ e_txt.T, atol=1e-4)
    # a single string and a PIL image are accepted too
    assert m.score(images[0], caps[0]).shape == (1, 1)


@pytest.mark.parametrize("name", MODELS)
def test_explain(name, batch):
    images, caps, _ = batch
    m = _model(name)
    ex = m.explain(images[0], caps[0])
    assert ex.maps and ex.tokens
    for k, v in ex.maps.items():
        assert v.ndim in (2, 3) and np.isfinite(v).all(), k
    assert np.isfinite(ex.score)
    with torch.no_grad():  # explain's score is the model's score
        assert abs(ex.score - float(m.score(images[0], caps[0]))) < 1e-3
    # both baselines work through the contract's hooks (position_embeddings, cam_target), on one grid
    maps = E.explain_all(m, images[0], caps[0], ex=ex)
    assert maps["baseline_region_sim"].shape == maps["baseline_gradcam"].shape


def test_baselines_of_the_multiscale_class_fused_dual_encoder(batch):
    """dual-label with multiscale (the UCM checkpoint's setting): positions carry all three maps and class
    posteriors, as its pooled embedding does."""
    images, caps, labels = batch
    m = _model("dual-label-lite0", multiscale=True, classes=sorted(set(labels)))
    rs = E.region_similarity(m, images[0], caps[0])
    assert rs.shape == E.gradcam(m, images[0], caps[0]).shape and np.abs(rs).max() <= 1 + 1e-5


@pytest.fixture(scope="module")
def gallery16():
    worlds = list(S.generate(16, seed=11))
    return [Image.fromarray(w.image) for w in worlds], [w.captions[0] for w in worlds[:5]]


@pytest.mark.parametrize("name", MODELS)
def test_score_from_state(name, gallery16):
    """The split contract: the image state cached as an index keeps it (float32 numpy, float16 numpy) scores as
    the pixels do, gives the stage-1 embedding, and explains a gallery image without the backbone."""
    images, caps = gallery16
    m = _model(name)
    with torch.no_grad():
        x = m.preprocess(images)
        st = m.image_state(x)
        assert st and all(v.shape[0] == len(images) for v in st.values()), {k: v.shape for k, v in st.items()}
        pix = m.score(x, caps)
        assert torch.allclose(m.state_embedding(st), m.encode_image(x), atol=1e-5)
        s32 = m.score_state({k: v.numpy() for k, v in st.items()}, caps)
        s16 = m.score_state({k: v.half().numpy() for k, v in st.items()}, caps)
        ts = m.text_state(caps)  # the text encoded once serves both stages of a search
        assert torch.allclose(m.encode_text(ts), m.encode_text(caps), atol=1e-6)
        assert torch.allclose(m.score_state(st, ts), pix, atol=1e-6)
    assert (s32 - pix).abs().max() <= 1e-5
    err = float((s16 - pix).abs().max())
    assert err <= 1e-3, err
    # the same top-10 per text, wherever the 10th and 11th images are further apart than float16 can blur
    for j in range(len(caps)):
        order = pix[:, j].argsort(descending=True)
        if pix[order[9], j] - pix[order[10], j] > 2 * err:
            assert set(s16[:, j].argsort(descending=True)[:10].tolist()) == set(order[:10].tolist())
    if m.explains_state():
        row = {k: v[3:4].half().numpy() for k, v in st.items()}
        a, b = m.explain(images[3], caps[0]), m.explain_state(row, caps[0])
        assert a.maps.keys() == b.maps.keys() and a.tokens == b.tokens and abs(a.score - b.score) <= 1e-3
        for k in a.maps:  # float16 regions/maps: within 1% of the map's range (measured: <= 0.05%)
            assert np.abs(a.maps[k] - b.maps[k]).max() <= 1e-2 * np.abs(a.maps[k]).max(), k


@pytest.mark.parametrize("name", MODELS)
def test_remembered_texts(name, batch):
    """remember_texts (the Demo turns it on): a text encoded again scores and explains exactly as the first time,
    nothing is kept while gradients are recorded, and train() forgets (the weights are about to change)."""
    images, caps, _ = batch
    m = _model(name)
    with torch.no_grad():
        x = m.preprocess(images[:2])
        before = [m.score(x, [c]) for c in caps[:3]]
        ex = m.explain(images[0], caps[0])
        m.remember_texts(2)
        for _ in range(2):
            assert all(torch.equal(m.score(x, [c]), b) for c, b in zip(caps[:3], before))
        again = m.explain(images[0], caps[0])
    assert again.tokens == ex.tokens and again.score == ex.score
    assert all(np.array_equal(again.maps[k], ex.maps[k]) for k in ex.maps)
    if m._memo is not None and len(m._memo[0]):   # models whose text side goes through the memo
        assert len(m._memo[0]) <= 2
        m.score(x, [caps[4]])                      # gradients on: not remembered
        assert caps[4] not in m._memo[0]
        m.train()
        assert not m._memo[0]


SCORE_MAPS = [n for n in MODELS if getattr(arch_class(model_config(n)["arch"], n), "has_score_maps", bool)()]


@pytest.mark.parametrize("name", SCORE_MAPS)
def test_score_map_sums_to_the_score(name, gallery16):
    """score_map on: score_map_state splits the model's own score over positions (its sum is the score); the "*score"
    map of the explanation is its positive part, depends on the query, and explains from a float16 state as from the
    pixels; the mosaic objective's maps are the same."""
    images, caps = gallery16
    m = _model(name, score_map=True)
    with torch.no_grad():
        x = m.preprocess(images[:3])
        st = m.image_state(x)
        s = m.score(x, caps[:3]).diagonal()
        maps = m.score_map_state(st, caps[:3])
        assert torch.allclose(maps.sum((1, 2)), s, atol=1e-5)
        assert torch.allclose(m.score_maps(x, caps[:3]), maps, atol=1e-6)
    ex = m.explain(images[0], caps[0])
    (key,) = [k for k in ex.maps if k.endswith("score")]
    split = m.score_map_state(m.image_state(m.preprocess(images[:1])), caps[:1])[0].detach().numpy()
    assert abs(float(split.sum()) - ex.score) <= 1e-5
    assert np.allclose(ex.maps[key], np.maximum(split, 0), atol=1e-6)   # the page shows the positive part
    assert not np.allclose(ex.maps[key], m.explain(images[0], caps[1]).maps[key])   # the query matters
    row = {k: v[:1].half().numpy() for k, v in st.items()}
    b = m.explain_state(row, caps[0]).maps[key]
    assert np.abs(ex.maps[key] - b).max() <= 1e-2 * np.abs(split).max()   # float16 error against the split's scale


@pytest.mark.parametrize("name", [n for n in MODELS if n not in HEAVY])
def test_training_steps_reduce_loss(name, batch):
    images, caps, labels = batch
    m = _model(name).train()
    x = m.preprocess(images)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        out = TrainStep(m)(x, caps, caps, labels, list(range(len(caps))))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] * 0.9, losses


@pytest.mark.parametrize("name", [n for n in MODELS if n not in HEAVY])
def test_save_load_identical(name, batch, tmp_path):
    images, caps, _ = batch
    m = _model(name)
    path = save(m, tmp_path / "m.safetensors", {"model": name})
    m2 = load(path)
    assert load_model(str(path)).name == name
    with torch.no_grad():
        x = m.preprocess(images[:2])
        assert torch.equal(m.score(x, caps[:3]), m2.score(x, caps[:3]))
        assert torch.equal(m.encode_text(caps[:3]), m2.encode_text(caps[:3]))
    # fp16 checkpoints round to half precision: outputs stay close
    m3 = load(save(m, tmp_path / "h.safetensors", half=True))
    with torch.no_grad():
        assert torch.allclose(m.score(x, caps[:3]), m3.score(x, caps[:3]), atol=2e-2)


@pytest.mark.parametrize("name,switch", [(n, k) for n in MODELS if n not in HEAVY
                                         for k, v in model_config(n).items() if k.startswith("use_") and v])
def test_ablation_switch_changes_forward(name, switch, batch):
    images, caps, labels = batch
    on, off = _model(name), _model(name, **{switch: False})
    assert on.switches()[switch] is True and off.switches()[switch] is False
    x = on.preprocess(images)
    ids = list(range(len(caps)))
    with torch.no_grad():
        a, b = on.score(x, caps), off.score(x, caps)
        la, lb = TrainStep(on)(x, caps, caps, labels, ids)["loss"], TrainStep(off)(x, caps, caps, labels, ids)["loss"]
    assert a.shape == b.shape
    # a module either shapes the score (architecture) or the objective (loss terms, margins): one must change
    assert not torch.allclose(a, b) or not torch.allclose(la, lb), switch


def test_unknown_model_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no-such-model")
    with pytest.raises(ValueError, match="neither a checkpoint"):
        load_model("no-such-model")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_model(str(bad))
