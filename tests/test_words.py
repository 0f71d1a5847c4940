"""The token-level contrast (train.word_weight): each word's best region, averaged over the caption, must pick the
caption's own image out of the batch (losses.word_contrast on the model's word_regions)."""
import math

import pytest
import torch

from rsdemo import losses


def _sim(n: int = 4, t: int = 3, r: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """sim [n, n, t, r] where text m's words each match one region of image m only (cosine 1, else 0)."""
    sim = torch.zeros(n, n, t, r)
    for m in range(n):
        sim[m, m, :, m % r] = 1.0
    return sim, torch.ones(n, t, dtype=torch.bool)


def test_word_contrast_on_constructed_similarities():
    sim, mask = _sim()
    flat = torch.zeros_like(sim)
    assert float(losses.word_contrast(flat, mask)) == pytest.approx(math.log(4), abs=1e-6)   # nothing matches: chance
    right = float(losses.word_contrast(sim, mask))
    wrong = float(losses.word_contrast(sim.roll(1, 0), mask))
    assert right < 1e-6 < math.log(4) < wrong
    # padded word positions do not count: a pad that matches another image changes nothing
    mask[:, -1] = False
    padded = sim.clone()
    padded[1, 0, -1, :] = 5.0
    assert float(losses.word_contrast(padded, mask)) == pytest.approx(float(losses.word_contrast(sim, mask)), abs=1e-6)
    # a duplicate pair is no negative: image 1 matching text 0 stops costing once the pair is masked
    dup = torch.zeros(4, 4, dtype=torch.bool)
    both = sim.clone()
    both[1, 0] = sim[0, 0]
    dup[0, 1] = dup[1, 0] = True
    assert float(losses.word_contrast(both, mask, dup=dup)) < float(losses.word_contrast(both, mask))


def test_word_objective_trains_the_region_words(tmp_path, monkeypatch):
    """One training step of ccnet with train.word_weight: the loss adds the word term and its gradient reaches the
    region projection and the word projection (the two sides of every word map)."""
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path / "cache"))
    from rsdemo.data.formats import open_dataset
    from rsdemo.models.factory import create_model
    from rsdemo.training.step import TrainStep

    torch.manual_seed(0)
    model = create_model("ccnet-slim", image_size=64, train={"word_weight": 1.0})
    ds = open_dataset("synthetic:12").split("train")
    images = torch.cat([model.preprocess(ds[i].image) for i in range(6)])
    caps = [ds[i].captions[0] for i in range(6)]
    net = TrainStep(model)
    res = net(images, caps, caps, image_ids=list(range(6)))
    sim, mask = model.word_regions(images, caps)
    want = losses.word_contrast(sim.float(), mask, 20.0, losses.duplicate_mask(caps, list(range(6))))
    assert float(res["word"]) == pytest.approx(float(want), rel=1e-4)
    assert float(res["loss"]) == pytest.approx(float(res["triplet"] + model.config.cd_weight * res["cd"] + want),
                                               rel=1e-4)
    res["loss"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    assert any(n.startswith("region") for n in grads) and any(n.startswith("text") for n in grads)


@pytest.mark.parametrize("model", ["dual-lite0", "amfmn-slim"])
def test_word_weight_needs_word_regions(model):
    from rsdemo.models.factory import create_model
    from rsdemo.training.step import TrainStep

    with pytest.raises(ValueError, match="word_weight"):
        TrainStep(create_model(model, train={"word_weight": 1.0}))


def test_ccnet_without_regions_refuses_the_word_objective():
    from rsdemo.models.factory import create_model

    m = create_model("ccnet-slim", image_size=64, use_tam=False, use_cfm=False)
    with pytest.raises(ValueError, match="use_tam or use_cfm"):
        m.word_regions(torch.zeros(2, 3, 64, 64), ["a red house", "a field"])
