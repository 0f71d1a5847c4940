"""Data/leakage report: counts, problems, duplicate names, captions and pixels across splits."""
from __future__ import annotations

import time

import pytest

from rsdemo.data.dataset import CaptionDataset, Problem, Record, normalise_caption
from rsdemo.data.formats import load_coco, load_folder, load_karpathy, load_precomp, open_dataset
from rsdemo.data.report import data_report, format_report

try:
    from . import fixtures as fx
except ImportError:
    import fixtures as fx

real = fx.real


# ---- fixtures ---------------------------------------------------------------------------------

def test_report_on_karpathy_fixture(tmp_path):
    ds = load_karpathy(fx.write_karpathy(tmp_path), images=tmp_path / "images")
    rep = data_report(ds)
    assert rep["name"] == "tiny" and rep["images"] == 5 and rep["captions"] == 23
    assert list(rep["splits"]) == ["train", "val", "test"]
    assert rep["splits"]["train"] == {"images": 2, "captions": 9}
    assert rep["caption_counts"] == {4: 2, 5: 3}
    assert rep["labels"]["Synthetic Scene"] == 1 and rep["unlabelled"] == 0
    assert rep["problems"]["total"] == 3
    assert {(g["message"], g["count"]) for g in rep["problems"]["groups"]} == {
        ("blank caption", 1), ("4 captions (most images have 5)", 2)}
    # forest_4 (test) says "there is a FARM number 0", a train caption once normalised
    test_vs_train = next(d for d in rep["caption_leakage"] if d["split"] == "test" and d["against"] == "train")
    assert test_vs_train["shared"] == 1 and test_vs_train["examples"] == ["there is a farm number 0"]
    assert test_vs_train["distinct"] == 10
    ic = rep["image_check"]
    assert ic["checked"] == 5 and ic["by_stem"] == 5 and ic["missing"]["count"] == 0
    assert ic["duplicates_across"] == [{"train": ["farm_1.tif"], "test": ["forest_4.tif"]}]
    assert ic["duplicates_within"] == {}
    text = format_report(rep)
    assert "test vs train: 1 of 10 test captions also in train" in text
    assert "train:farm_1.tif = test:forest_4.tif" in text
    assert "blank caption" in text


def test_report_unreadable_and_missing_images(tmp_path):
    root = fx.write_folder(tmp_path)
    with open(root / "captions.csv", "a") as f:
        f.write("gone.png,not on disk,test,\n")
    rep = data_report(load_folder(root))
    ic = rep["image_check"]
    assert [u["filename"] for u in ic["unreadable"]] == ["broken.png"]
    assert ic["missing"] == {"count": 1, "examples": ["gone.png"]}
    assert ic["checked"] == 3 and ic["duplicates_across"] == [] and ic["duplicates_within"] == {}
    text = format_report(rep)
    assert "unreadable" in text and "broken.png" in text and "1 missing" in text


def test_report_without_images(tmp_path):
    ds = load_precomp(fx.write_precomp(tmp_path))
    rep = data_report(ds)
    assert rep["image_check"] is None
    assert "images: not checked (no image folder given)" in format_report(rep)
    root = fx.write_folder(tmp_path / "f")
    assert data_report(load_folder(root), check_images=False)["image_check"] is None


def test_duplicate_filenames_and_repeats():
    recs = [Record("a.tif", ["x .", "X", "y"], "train"), Record("a.tif", ["z", "z .", "Z"], "train"),
            Record("b.tif", ["p", "q"], "train"), Record("b.tif", ["p", "r"], "test"),
            Record("c.tif", ["only"], "test"), Record("c.tif", ["r", "s"], "val")]
    rep = data_report(CaptionDataset(recs, name="dups"))
    dn = rep["duplicate_filenames"]
    assert dn["within"] == {"train": {"count": 1, "examples": ["a.tif"]}}
    assert {tuple(d["splits"]): d["examples"] for d in dn["across"]} == {("train", "test"): ["b.tif"],
                                                                         ("val", "test"): ["c.tif"]}
    rp = rep["repeated_captions"]
    assert (rp["train"]["not_all_distinct"], rp["train"]["all_identical"]) == (2, 1)
    assert (rp["test"]["not_all_distinct"], rp["test"]["all_identical"]) == (0, 0)
    pairs = {(d["split"], d["against"]): d["shared"] for d in rep["caption_leakage"]}
    assert pairs == {("val", "train"): 0, ("test", "train"): 1, ("test", "val"): 1}
    text = format_report(rep)
    assert "within train: 1 (e.g. a.tif)" in text and "in both train and test: 1 (e.g. b.tif)" in text


def test_problem_list_is_truncated():
    probs = [Problem("f.txt", f"line {k}", "blank caption") for k in range(30)]
    rep = data_report(CaptionDataset([Record("a.tif", ["x"])], problems=probs))
    text = format_report(rep)
    assert "   30 x f.txt: blank caption" in text
    assert "f.txt: line 19: blank caption" in text and "line 20:" not in text
    assert "... and 10 more" in text


# ---- real data (README defects 2, 3, 12) ------------------------------------------------------

@pytest.mark.parametrize("name,shared,distinct", [
    ("rsitmd", 52, 2101), ("rsicd", 238, 3330), ("ucm", 199, 391), ("sydney", 39, 143)])
def test_real_precomp_caption_leakage(name, shared, distinct):
    rep = data_report(load_precomp(real(f"amfmn_precomp/{name}")), check_images=False)
    d = next(d for d in rep["caption_leakage"] if d["split"] == "test" and d["against"] == "train")
    assert (d["shared"], d["distinct"]) == (shared, distinct)


@pytest.mark.parametrize("rel,want", [
    ("ucm_captions/dataset_ucm_modified.json", {"test": (146, 377), "val": (199, 391)}),
    ("sydney_captions/dataset_sydney_modified.json", {"test": (23, 136), "val": (39, 143)}),
])
def test_real_karpathy_caption_leakage(rel, want):
    rep = data_report(load_karpathy(real(rel)), check_images=False)
    got = {d["split"]: (d["shared"], d["distinct"]) for d in rep["caption_leakage"] if d["against"] == "train"}
    assert got == want


@pytest.mark.parametrize("name,want", [
    # README counts 983 / 42 for RSITMD train including its 4 all-blank images; those have no captions here
    ("rsitmd", {"train": (979, 38), "test": (115, 2)}),
    ("rsicd", {"train": (9167, 4851), "test": (1030, 2)}),
    ("ucm", {"train": (350, 0), "test": (59, 0)}),
    ("sydney", {"train": (139, 0), "test": (14, 0)}),
])
def test_real_repeated_captions(name, want):
    rep = data_report(load_precomp(real(f"amfmn_precomp/{name}"), splits=["train", "test"]), check_images=False)
    got = {s: (d["not_all_distinct"], d["all_identical"]) for s, d in rep["repeated_captions"].items()}
    assert got == want


def test_real_distinct_captions():
    # README defect 2: distinct normalised captions, all splits (the normalisation the report uses)
    ucm = load_coco(real("ucm_captions")).captions()[0]
    sydney = load_karpathy(real("sydney_captions/dataset_sydney_modified.json")).captions()[0]
    assert len({normalise_caption(c) for c in ucm}) == 2030
    assert len({normalise_caption(c) for c in sydney}) == 1109


@pytest.fixture(scope="module")
def ucm_full_report():
    """Decodes all 2100 UCM images once for the tests below."""
    ds = load_coco(real("ucm_captions"), images=real("ucm_images"))
    t = time.perf_counter()
    rep = data_report(ds)
    return rep, time.perf_counter() - t


@pytest.mark.slow
def test_real_ucm_duplicate_images(ucm_full_report):
    rep, seconds = ucm_full_report
    ic = rep["image_check"]
    assert ic["checked"] == 2100 and ic["by_stem"] == 2100
    assert ic["missing"]["count"] == 0 and ic["unreadable"] == []
    assert ic["duplicates_within"] == {"train": [["102.tif", "103.tif"]]}      # README defect 12
    assert ic["duplicates_across"] == []
    assert seconds < 60


@pytest.mark.slow
def test_real_ucm_report_text(ucm_full_report):
    rep, _ = ucm_full_report
    text = format_report(rep)
    assert "train: 1 group(s): 102.tif = 103.tif" in text
    assert "val vs train: 199 of 391 val captions also in train" in text
    assert "test vs train: 146 of 377 test captions also in train" in text


def test_real_sydney_precomp_verify_splits_overlap_train():
    ds = load_precomp(real("amfmn_precomp/sydney"), splits=["train", "train_verify", "val_verify", "test"])
    rep = data_report(ds, check_images=False)
    across = {tuple(d["splits"]): d["count"] for d in rep["duplicate_filenames"]["across"]}
    # README: train_verify + val_verify are exactly the 497 train images, and disjoint from test
    assert across == {("train", "train_verify"): 397, ("train", "val_verify"): 100}
