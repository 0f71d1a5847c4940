"""Recall@K metrics (rsdemo.evaluate) against hand-computed ranks and a brute-force reference."""
import tracemalloc

import numpy as np
import pytest

from rsdemo.evaluate import format_recall, ranks, recall

TIES = ("pessimistic", "optimistic")


def brute(sim, owner, ks, ties):
    """Direct per-query reading of the protocol, with no vectorisation or chunking."""
    sim = np.asarray(sim, dtype=np.float64)
    n_img, n_cap = sim.shape
    above = (lambda x, s: x >= s) if ties == "pessimistic" else (lambda x, s: x > s)
    i2t = []
    for i in range(n_img):
        mine = [j for j in range(n_cap) if owner[j] == i]
        if not mine:
            continue
        s = max(sim[i, j] for j in mine)
        i2t.append(sum(above(sim[i, j], s) for j in range(n_cap) if owner[j] != i))
    t2i = []
    for j in range(n_cap):
        s = sim[owner[j], j]
        t2i.append(sum(above(sim[i, j], s) for i in range(n_img) if i != owner[j]))
    out = {}
    for name, r in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * sum(x < k for x in r) / len(r)
    return out


def check(r, want):
    for key, val in want.items():
        assert r[key] == pytest.approx(val), key


# 3 images x 6 captions, two captions each, no tied scores anywhere.
OWNER3 = np.array([0, 0, 1, 1, 2, 2])
SIM3 = np.array([
    [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],   # image 0: best own 0.9, nothing above -> rank 0
    [0.7, 0.6, 0.5, 0.1, 0.15, 0.3],  # image 1: best own 0.5, 0.7 and 0.6 above -> rank 2
    [0.5, 0.4, 0.3, 0.6, 0.2, 0.1],   # image 2: best own 0.2, four above -> rank 4
])
# caption ranks (t2i), column by column: 0, 2, 1, 2, 1, 2


@pytest.mark.parametrize("ties", TIES)
def test_hand_ranks(ties):
    i2t, t2i = ranks(SIM3, OWNER3, ties)
    assert i2t.tolist() == [0, 2, 4]
    assert t2i.tolist() == [0, 2, 1, 2, 1, 2]
    r = recall(SIM3, OWNER3, ks=(1, 2, 3), ties=ties)
    check(r, {"i2t_r1": 100 / 3, "i2t_r2": 100 / 3, "i2t_r3": 200 / 3,
              "t2i_r1": 100 / 6, "t2i_r2": 50, "t2i_r3": 100})
    assert r["mr"] == pytest.approx((100 / 3 + 100 / 3 + 200 / 3 + 100 / 6 + 50 + 100) / 6)
    assert (r["n_images"], r["n_captions"]) == (3, 6)


def test_default_keys():
    r = recall(SIM3, OWNER3)
    assert set(r) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mr", "n_images", "n_captions"}
    check(r, {"i2t_r1": 100 / 3, "i2t_r5": 100, "i2t_r10": 100, "t2i_r1": 100 / 6, "t2i_r5": 100, "t2i_r10": 100,
              "mr": 75})


def test_ties_both_rules():
    owner = np.array([0, 0, 1, 1])
    sim = np.array([
        [0.5, 0.2, 0.5, 0.3],  # image 0: own best 0.5 tied with caption 2 (image 1's)
        [0.3, 0.3, 0.3, 0.3],  # image 1: own best 0.3 tied with both of image 0's captions
    ])
    # caption 3: its own image scores 0.3, image 0 also 0.3 -> tie
    i2t, t2i = ranks(sim, owner, "pessimistic")
    assert i2t.tolist() == [1, 2] and t2i.tolist() == [0, 1, 1, 1]
    i2t, t2i = ranks(sim, owner, "optimistic")
    assert i2t.tolist() == [0, 0] and t2i.tolist() == [0, 1, 1, 0]
    check(recall(sim, owner, ks=(1, 2, 3)),
          {"i2t_r1": 0, "i2t_r2": 50, "i2t_r3": 100, "t2i_r1": 25, "t2i_r2": 100})
    check(recall(sim, owner, ks=(1, 2, 3), ties="optimistic"),
          {"i2t_r1": 100, "i2t_r2": 100, "t2i_r1": 50, "t2i_r2": 100})


def test_constant_matrix():
    sim = np.full((3, 6), 0.25, dtype=np.float32)
    ks = (1, 2, 3, 4, 5, 6)
    r = recall(sim, OWNER3, ks=ks)
    # every image has 4 rival captions and every caption 2 rival images, all tied
    for k in ks:
        assert r[f"i2t_r{k}"] == (100 if k >= 5 else 0)
        assert r[f"t2i_r{k}"] == (100 if k >= 3 else 0)
    r = recall(sim, OWNER3, ks=ks, ties="optimistic")
    assert all(r[f"{d}_r{k}"] == 100 for d in ("i2t", "t2i") for k in ks)


@pytest.mark.parametrize("ties", TIES)
def test_uneven_captions_and_distractor(ties):
    # images 0, 1, 2 own 5, 2 and 1 captions; image 3 owns none and is only a gallery distractor
    owner = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    sim = np.array([
        [0.9, 0.1, 0.1, 0.1, 0.1, 0.95, 0.2, 0.3],  # own best 0.9, beaten by 0.95 -> rank 1
        [0.2, 0.2, 0.2, 0.2, 0.2, 0.5, 0.8, 0.6],   # own best 0.8 -> rank 0
        [0.4, 0.4, 0.4, 0.4, 0.4, 0.1, 0.1, 0.35],  # own 0.35, five 0.4 above -> rank 5
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.7],   # distractor: outranks the owners of captions 6 and 7
    ])
    i2t, t2i = ranks(sim, owner, ties)
    assert i2t.tolist() == [1, 0, 5]  # three queries: image 3 is not one
    assert t2i.tolist() == [0, 2, 2, 2, 2, 1, 1, 2]
    r = recall(sim, owner, ks=(1, 2, 6), ties=ties)
    check(r, {"i2t_r1": 100 / 3, "i2t_r2": 200 / 3, "i2t_r6": 100,
              "t2i_r1": 12.5, "t2i_r2": 37.5, "t2i_r6": 100})
    assert (r["n_images"], r["n_captions"]) == (4, 8)
    # without the distractor, caption 6 would rank first
    assert ranks(sim[:3], owner, ties)[1][6] == 0


def test_duplicate_captions_cap_i2t():
    # captions 0 and 1 are the same sentence for images 0 and 1, so their columns are identical
    owner = np.array([0, 1, 2])
    sim = np.array([[0.9, 0.9, 0.1],
                    [0.8, 0.8, 0.2],
                    [0.1, 0.1, 0.7]])
    assert recall(sim, owner, ks=(1,))["i2t_r1"] == pytest.approx(100 / 3)
    assert recall(sim, owner, ks=(1,), ties="optimistic")["i2t_r1"] == 100

    # same on embeddings: 4 of 20 captions copied over another image's, so 8 images can never be an R@1 hit
    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 32))
    txt = img + 0.01 * rng.normal(size=img.shape)
    for a, b in ((0, 1), (2, 3), (4, 5), (6, 7)):
        txt[b] = txt[a]
    sim = img @ txt.T
    owner = np.arange(20)
    assert recall(sim, owner, ks=(1,))["i2t_r1"] == pytest.approx(60)
    assert recall(sim, owner, ks=(1,), ties="optimistic")["i2t_r1"] >= 80


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", TIES)
def test_order_invariant(seed, ties):
    rng = np.random.default_rng(seed)
    n_img, n_cap = 12, 40
    sim = rng.integers(0, 4, size=(n_img, n_cap)).astype(np.float32)  # few levels: ties everywhere
    owner = rng.integers(0, n_img - 2, size=n_cap)  # last two images own nothing
    base = recall(sim, owner, ks=(1, 2, 5), ties=ties)
    for _ in range(3):
        pi, pc = rng.permutation(n_img), rng.permutation(n_cap)
        new_pos = np.argsort(pi)  # image i moves to row new_pos[i]
        got = recall(sim[pi][:, pc], new_pos[owner[pc]], ks=(1, 2, 5), ties=ties)
        assert got == base


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("block", [1, 37, 249, 250, 251, 1000, 50 * 250, 1 << 22])
def test_chunked_matches_brute(ties, block):
    rng = np.random.default_rng(7)
    sim = np.round(rng.random((50, 250)), 1)  # one decimal: many ties
    owner = rng.integers(0, 45, size=250)
    owner[:45] = np.arange(45)  # images 0-44 own at least one caption, 45-49 none
    ks = (1, 3, 7, 20)
    got = recall(sim, owner, ks=ks, ties=ties, block=block)
    want = brute(sim, owner, ks, ties)
    for key, val in want.items():
        assert got[key] == pytest.approx(val), key


@pytest.mark.parametrize("ties", TIES)
def test_perfect_diagonal(ties):
    owner = np.repeat(np.arange(10), 5)
    sim = (owner[None, :] == np.arange(10)[:, None]).astype(np.float32)
    r = recall(sim, owner, ties=ties)
    assert all(r[k] == 100 for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mr"))


def test_memory_bounded():
    rng = np.random.default_rng(1)
    sim = rng.random((400, 5000), dtype=np.float32)
    owner = np.repeat(np.arange(400), 5000 // 400 + 1)[:5000]
    tracemalloc.start()
    recall(sim, owner, block=20_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # a full bool copy of sim alone would be 2 MB


def test_nan_rejected():
    sim = SIM3.copy()
    sim[2, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[2, 4\]"):
        recall(sim, OWNER3)


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3, 6\).*\(5,\)"):
        recall(SIM3, OWNER3[:5])
    with pytest.raises(ValueError, match="2-D"):
        recall(SIM3[0], OWNER3)


@pytest.mark.parametrize("bad", [3, -1])
def test_owner_out_of_range(bad):
    owner = OWNER3.copy()
    owner[1] = bad
    with pytest.raises(ValueError, match=rf"owner\[1\] = {bad}"):
        recall(SIM3, owner)


def test_bad_arguments():
    with pytest.raises(ValueError, match="ties"):
        recall(SIM3, OWNER3, ties="random")
    with pytest.raises(ValueError, match="integer"):
        recall(SIM3, OWNER3.astype(float))
    with pytest.raises(ValueError, match="ks"):
        recall(SIM3, OWNER3, ks=(0, 1))


def test_tensor_like_input():
    class Fake:  # mimics a torch tensor on a device: needs detach() and cpu() before numpy
        def __init__(self, a):
            self.a, self.ready = a, False

        def detach(self):
            return self

        def cpu(self):
            self.ready = True
            return self

        def __array__(self, dtype=None, copy=None):
            assert self.ready
            return self.a

    assert recall(Fake(SIM3), Fake(OWNER3)) == recall(SIM3, OWNER3)


def test_torch_input():
    torch = pytest.importorskip("torch")
    want = recall(SIM3, OWNER3)
    sim = torch.tensor(SIM3, requires_grad=True)
    assert recall(sim, torch.tensor(OWNER3)) == want
    half = torch.tensor(SIM3).to(torch.bfloat16)
    assert recall(half, OWNER3) == recall(half.float().numpy(), OWNER3)


def test_format():
    r = {"i2t_r1": 12.381, "i2t_r5": 44.76, "i2t_r10": 65.714, "t2i_r1": 10.1, "t2i_r5": 31.8,
         "t2i_r10": 56.85, "mr": 36.93, "n_images": 1093, "n_captions": 5465}
    assert format_recall(r) == "i2t R@1/5/10 12.38/44.76/65.71 | t2i R@1/5/10 10.10/31.80/56.85 | mR 36.93"
    r = recall(SIM3, OWNER3, ks=(1, 2))
    assert format_recall(r) == "i2t R@1/2 33.33/33.33 | t2i R@1/2 16.67/50.00 | mR 33.33"
