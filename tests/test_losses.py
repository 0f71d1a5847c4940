"""Training losses (rsdemo.losses) against values worked out by hand on tiny score matrices."""
import math

import pytest
import torch
import torch.nn.functional as F

from rsdemo.losses import dynamic_margin, duplicate_mask, infonce, prior_similarity, triplet

# 3x3 scores, s[i, j] = score(image i, caption j), positives on the diagonal.
S3 = [[0.90, 0.55, 0.20],
      [0.60, 0.70, 0.40],
      [0.10, 0.65, 0.50]]
# Hinges with margin 0.2 (only the positive ones listed):
#   image -> text, row i against s[i, i]:
#     row 1: 0.2 - 0.7 + 0.60 = 0.10
#     row 2: 0.2 - 0.5 + 0.65 = 0.35
#   text -> image, column j against s[j, j]:
#     col 1: 0.2 - 0.7 + 0.55 = 0.05 (image 0), 0.2 - 0.7 + 0.65 = 0.15 (image 2)
#     col 2: 0.2 - 0.5 + 0.40 = 0.10 (image 1)
#   every other hinge is negative -> 0.
# Sum over negatives: 0.10 + 0.35 + 0.05 + 0.15 + 0.10 = 0.75.
# Hardest per anchor: rows 0 + 0.10 + 0.35, cols 0 + 0.15 + 0.10 = 0.70.


def s3(grad=False):
    return torch.tensor(S3, dtype=torch.float64, requires_grad=grad)


def close(x, y, tol=1e-9):
    return abs(float(x) - y) < tol


def test_triplet_2x2_by_hand():
    s = torch.tensor([[0.8, 0.3], [0.5, 0.6]], dtype=torch.float64)
    # i2t: 0.2-0.8+0.3 = -0.3 -> 0; 0.2-0.6+0.5 = 0.1.  t2i: 0.2-0.8+0.5 = -0.1 -> 0; 0.2-0.6+0.3 = -0.1 -> 0.
    assert close(triplet(s, reduction="sum"), 0.1)
    assert close(triplet(s), 0.05)  # 0.1 / B
    # One negative per anchor: hardest is the same as summing.
    assert close(triplet(s, hardest=True), 0.05)


def test_triplet_sum_vs_hardest():
    assert close(triplet(s3(), reduction="sum"), 0.75)
    assert close(triplet(s3()), 0.75 / 3)
    assert close(triplet(s3(), hardest=True, reduction="sum"), 0.70)
    assert close(triplet(s3(), hardest=True), 0.70 / 3)


def test_triplet_reduction_sum_is_mean_times_batch():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 7, generator=g, dtype=torch.float64)
    for hardest in (False, True):
        assert torch.allclose(triplet(s, hardest=hardest, reduction="sum"), 7 * triplet(s, hardest=hardest))
    with pytest.raises(ValueError):
        triplet(s, reduction="none")


def test_triplet_per_pair_margin():
    m = torch.full((3, 3), 0.2, dtype=torch.float64)
    assert close(triplet(s3(), margin=m, reduction="sum"), 0.75)
    # Margin 0 for (image 2, caption 1): i2t row 2: 0 - 0.5 + 0.65 = 0.15 (was 0.35);
    # t2i col 1, image 2: 0 - 0.7 + 0.65 = -0.05 -> 0 (was 0.15). 0.75 - 0.35 + 0.15 - 0.15 = 0.40.
    m[2, 1] = 0.0
    assert close(triplet(s3(), margin=m, reduction="sum"), 0.40)


def test_triplet_mask_excludes_pair_both_directions():
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[2, 1] = True
    # Drops i2t row 2 / caption 1 (0.35) and t2i col 1 / image 2 (0.15): 0.75 - 0.5 = 0.25.
    assert close(triplet(s3(), mask=mask, reduction="sum"), 0.25)
    # Hardest: row 2 has nothing left (0), col 1 keeps image 0 (0.05): 0 + 0.10 + 0 + 0 + 0.05 + 0.10 = 0.25.
    assert close(triplet(s3(), mask=mask, hardest=True, reduction="sum"), 0.25)


def test_triplet_zero_when_positives_win_by_more_than_margin():
    s = torch.eye(4) * 0.9 + 0.1  # positives 1.0, negatives 0.1: gap 0.9 > 0.2
    assert float(triplet(s)) == 0.0
    assert float(triplet(s, hardest=True)) == 0.0
    assert float(triplet(s, margin=0.89)) == 0.0
    assert float(triplet(s, margin=1.0)) > 0.0


def test_prior_similarity_basic_properties():
    texts = ["Many green trees near a river.", "a red roof", "A red roof.", "a white ship in the harbour",
             "red cars on the road"]
    p = prior_similarity(texts)
    assert p.shape == (5, 5) and p.dtype == torch.float32
    assert torch.allclose(p, p.T)
    assert torch.equal(p.diagonal(), torch.ones(5))
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    assert close(p[1, 2], 1.0, 1e-6)  # identical after case and punctuation
    assert float(p[0, 3]) == 0.0  # no word in common
    assert float(prior_similarity(["a plane on the runway", "a ship in the harbour"])[0, 1]) == 0.0  # stopwords only


def test_prior_similarity_by_hand():
    # B = 2. idf = ln(3 / (1 + df)) + 1: red (df 2) -> 1, roof / car (df 1) -> a = 1 + ln 1.5.
    # Vectors [1, a, 0] and [1, 0, a]: cosine = 1 / (1 + a^2).
    a = 1 + math.log(1.5)
    p = prior_similarity(["red roof", "red car"])
    assert close(p[0, 1], 1 / (1 + a * a), 1e-6)


def test_prior_similarity_labels():
    texts = ["green trees", "a white ship", "a white ship"]
    p = prior_similarity(texts, labels=["forest", "forest", "port"])
    assert close(p[0, 1], 0.5, 1e-6)  # 0.5 * 0 (no shared words) + 0.5 * 1 (same label)
    assert close(p[1, 2], 0.5, 1e-6)  # 0.5 * 1 (same caption) + 0.5 * 0 (different label)
    assert float(p[0, 2]) == 0.0
    assert torch.equal(p.diagonal(), torch.ones(3))
    q = prior_similarity(texts, labels=["forest", "forest", "port"], weight=0.25)
    assert close(q[0, 1], 0.25, 1e-6) and close(q[1, 2], 0.75, 1e-6)


def test_dynamic_margin():
    prior = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    m = dynamic_margin(prior)
    # 0.2 - 0.15 * prior: 1 -> 0.05, 0 -> 0.2, 0.5 -> 0.125
    assert torch.allclose(m, torch.tensor([[0.05, 0.2], [0.125, 0.05]]))
    assert torch.allclose(dynamic_margin(prior, base=0.3, low=0.1), torch.tensor([[0.1, 0.3], [0.2, 0.1]]))


def test_dynamic_margin_feeds_triplet():
    texts = ["red roof", "red car", "green trees"]
    m = dynamic_margin(prior_similarity(texts))
    s = torch.randn(3, 3, requires_grad=True)
    triplet(s, margin=m).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_infonce_all_equal_is_log_b():
    for b in (2, 5):
        s = torch.full((b, b), 0.3, dtype=torch.float64)
        assert close(infonce(s), math.log(b))
        assert close(infonce(s, temperature=1.0), math.log(b))


def test_infonce_strongly_diagonal_near_zero():
    s = torch.eye(4, dtype=torch.float64)
    # Each row: -log(e^100 / (e^100 + 3)) ~ 3 e^-100.
    assert float(infonce(s, temperature=0.01)) < 1e-6


def test_infonce_matches_cross_entropy():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 5, generator=g, dtype=torch.float64)
    t = torch.arange(5)
    want = (F.cross_entropy(s / 0.1, t) + F.cross_entropy(s.T / 0.1, t)) / 2
    assert torch.allclose(infonce(s, temperature=0.1), want)
    want07 = (F.cross_entropy(s / 0.07, t) + F.cross_entropy(s.T / 0.07, t)) / 2
    assert torch.allclose(infonce(s), want07)
    with pytest.raises(ValueError):
        infonce(s, temperature=0.1, logit_scale=torch.tensor(1.0))


def test_infonce_learnable_logit_scale():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, 4, generator=g)
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = infonce(s, logit_scale=scale)
    assert torch.allclose(loss, infonce(s, temperature=0.07), atol=1e-5)
    loss.backward()
    assert scale.grad is not None and torch.isfinite(scale.grad) and float(scale.grad) != 0.0


def test_infonce_mask():
    s = torch.zeros(3, 3, dtype=torch.float64)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = True
    # i2t: row 0 keeps 2 equal logits -> ln 2, rows 1, 2 -> ln 3; t2i: column 1 keeps 2 -> ln 2, others ln 3.
    assert close(infonce(s, mask=mask), (math.log(2) + 2 * math.log(3)) / 3)
    # Masking everything leaves only the diagonal (never masked): loss 0, not NaN.
    s = torch.randn(3, 3, requires_grad=True)
    loss = infonce(s, mask=torch.ones(3, 3, dtype=torch.bool))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_duplicate_mask():
    texts = ["A red roof.", "a red  roof", "a white ship", "green trees"]
    m = duplicate_mask(texts)
    want = torch.zeros(4, 4, dtype=torch.bool)
    want[0, 1] = want[1, 0] = True
    assert torch.equal(m, want)
    m = duplicate_mask(texts, image_ids=["img7", "img8", "img7", "img9"])
    want[0, 2] = want[2, 0] = True
    assert torch.equal(m, want)
    assert not m.diagonal().any()


@pytest.mark.parametrize("loss", [
    lambda s: triplet(s),
    lambda s: triplet(s, hardest=True),
    lambda s: triplet(s, margin=torch.full((4, 4), 0.3), mask=torch.eye(4, dtype=torch.bool).roll(1, 0)),
    lambda s: infonce(s),
    lambda s: infonce(s, mask=torch.eye(4, dtype=torch.bool).roll(1, 0)),
])
def test_losses_backpropagate(loss):
    g = torch.Generator().manual_seed(3)
    s = (0.1 * torch.randn(4, 4, generator=g)).requires_grad_()
    loss(s).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
