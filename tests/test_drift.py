"""rsdemo.drift: the interval a recall can move to when every score drifts by up to eps, and the exact-or-interval
rule for cards (no model needed; the cards themselves are checked in test_checkpoints and test_ucm)."""
import numpy as np
import pytest

from rsdemo import drift
from rsdemo.evaluate import recall


def _world(seed=0, n=40, per=5):
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(n), per)
    sim = rng.normal(size=(n, n * per)) * 0.1
    sim[owner, np.arange(n * per)] += 0.15          # right pairs score higher, with many near misses
    return sim, owner


def test_zero_eps_is_the_recall_and_exact_ties_stay_ties():
    sim, owner = _world()
    tied = np.round(sim, 1)                           # many exact ties
    r = recall(tied, owner)
    assert r["mr"] < recall(tied, owner, ties="optimistic")["mr"]
    for k, (lo, hi) in drift.recall_bounds(tied, owner, 0.0).items():
        assert lo == hi == pytest.approx(r[k]), k
    # a tie (identical inputs: equal on every machine) never breaks inside the interval, however wide
    b = drift.recall_bounds(tied, owner, 0.01)
    untied = drift.recall_bounds(tied + np.random.default_rng(1).uniform(-1e-9, 1e-9, tied.shape), owner, 0.01)
    assert b["mr"][1] < untied["mr"][1]


def test_identical_captions_get_one_column():
    from rsdemo.evaluate import same_text_same_score

    sim = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = same_text_same_score(sim, ["a", "b", "a", "c"])
    assert np.array_equal(got[:, 2], sim[:, 0]) and np.array_equal(got[:, [0, 1, 3]], sim[:, [0, 1, 3]])
    assert same_text_same_score(sim, ["a", "b", "c", "d"]) is sim


def test_near_ties_are_not_ties():
    """Two different candidates 1e-7 apart are ordered (exact equality only is a tie); eps covers both orders."""
    owner = np.array([0, 1])
    sim = np.array([[0.5, 0.5 + 1e-7], [0.1, 0.9]])   # image 0's caption scores 1e-7 below image 1's
    assert recall(sim, owner, ks=(1,))["i2t_r1"] == recall(sim, owner, ks=(1,), ties="optimistic")["i2t_r1"] == 50
    assert drift.recall_bounds(sim, owner, 0.0, ks=(1,))["i2t_r1"] == (50, 50)
    assert drift.recall_bounds(sim, owner, 1e-7, ks=(1,))["i2t_r1"] == (50, 100)


def test_every_perturbation_within_eps_stays_inside():
    sim, owner = _world(1)
    rng = np.random.default_rng(2)
    for eps in (1e-4, 1e-3, 1e-2):
        b = drift.recall_bounds(sim, owner, eps)
        for _ in range(20):
            moved = sim + rng.uniform(-eps, eps, sim.shape)
            r = recall(moved, owner)
            for k, (lo, hi) in b.items():
                assert lo - 1e-9 <= r[k] <= hi + 1e-9, (eps, k)
        wider = drift.recall_bounds(sim, owner, 2 * eps)
        assert all(wider[k][0] <= lo and hi <= wider[k][1] for k, (lo, hi) in b.items())


def test_card_check_exact_on_its_kernels_interval_elsewhere():
    sim, owner = _world(3)
    here = {"cpu": "Some CPU", "isa": "AVX512", "torch": "x", "env": {}}
    metrics = {k: v for k, v in recall(sim, owner).items() if not k.startswith("n_")}
    card = {"kernels": here, "metrics": {"test": dict(metrics)}}
    assert drift.check(card, "test", sim, None, owner, now=here) == []
    eps = drift.tolerance(sim)
    assert eps > 0
    lo, hi = drift.recall_bounds(sim, owner, eps)["t2i_r1"]
    off = dict(metrics, t2i_r1=metrics["t2i_r1"] + 100 / len(owner))   # one caption query more than here
    card["metrics"]["test"] = off
    probs = drift.check(card, "test", sim, None, owner, now=here)
    assert len(probs) == 1 and "t2i_r1" in probs[0] and "must be exact" in probs[0]
    other = dict(here, env={"MKL_CBWR": "COMPATIBLE"})           # another kernel setting: the interval applies
    assert drift.same_kernels(card, here) and not drift.same_kernels(card, other)
    assert (drift.check(card, "test", sim, None, owner, now=other) == []) == (lo <= off["t2i_r1"] <= hi)
    card["metrics"]["test"] = dict(metrics, t2i_r1=hi + 100 / len(owner))
    assert "outside" in drift.check(card, "test", sim, None, owner, now=other)[0]


def test_a_card_without_a_record_is_held_to_the_interval():
    sim, owner = _world(4)
    card = {"metrics": {"test": {k: v for k, v in recall(sim, owner).items() if not k.startswith("n_")}}}
    assert not drift.same_kernels(card, drift.kernel_setting())
    assert drift.check(card, "test", sim, None, owner) == []
    card["kernels"] = drift.kernel_setting()
    assert drift.same_kernels(card) and drift.check(card, "test", sim, None, owner) == []
