"""UCM-captions on its real 2,100 images (../shared/data; every test skips cleanly without it).

Covers what a user pointing rsdemo at UCM needs: the splits, the scene class of every id (labels.csv and
the UC Merced Land Use download layout), images found by stem with one notice line, every image decoding,
and a search index over all of them.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsdemo.data.images import open_image
from rsdemo.data.formats import open_dataset
from rsdemo.data.labels import UCM_CLASSES, landuse_layout, load_labels
from rsdemo.training.step import TrainStep

try:
    from . import fixtures as fx
except ImportError:
    import fixtures as fx

real = fx.real


def _ucm(images=True):
    ann = real("ucm_captions")
    return open_dataset(f"ucm:{ann}", images=real("ucm_images") if images else None)


def test_split_counts_coco_and_precomp():
    ds = _ucm()
    assert ds.split_counts() == {"train": 1680, "val": 210, "test": 210}
    assert [len(r.captions) for r in ds.records] == [5] * 2100
    assert sorted(int(Path(r.filename).stem) for r in ds.records) == list(range(1, 2101))
    # AMFMN's precomp files: train = the same 1,680 ids, its "test" = the 210 COCO val ids
    pre = open_dataset(f"precomp:{real('amfmn_precomp/ucm')}", images=real("ucm_images"))
    assert pre.split_counts() == {"train": 1680, "test": 210}
    coco = {s: {r.filename for r in ds.records if r.split == s} for s in ("train", "val")}
    assert {r.filename for r in pre.records if r.split == "train"} == coco["train"]
    assert {r.filename for r in pre.records if r.split == "test"} == coco["val"]


def test_every_id_has_its_class():
    ds = _ucm()
    assert ds.label_source.endswith("labels.csv")
    rows = list(csv.DictReader(open(real("ucm_images/labels.csv"), encoding="utf-8")))
    assert len(rows) == 2100
    pat = re.compile(r"^([a-z]+)/([a-z]+)(\d\d)\.tif$")
    for row in rows:   # the labels file agrees with id = 100 * class index + file number + 1
        c, c2, n = pat.match(row["landuse_file"]).groups()
        assert c == c2 == row["class"]
        assert int(row["id"]) == 100 * UCM_CLASSES.index(c) + int(n) + 1
    by_id = {int(Path(r.filename).stem): r.label for r in ds.records}
    assert all(by_id[i] == UCM_CLASSES[(i - 1) // 100] for i in range(1, 2101))
    assert by_id[108] == "airplane" and by_id[2100] == "tenniscourt"
    assert not ds.problems
    assert load_labels(real("ucm_images/labels.csv"))["1"] == "agricultural"


def test_stem_resolution_one_notice(capfd):
    ds = _ucm()
    paths = [ds.image_path(i) for i in range(len(ds))]   # annotations say <id>.tif, the files are <id>.webp
    assert all(p.suffix == ".webp" and p.stem == Path(r.filename).stem for p, r in zip(paths, ds.records))
    err = capfd.readouterr().err
    assert err.count("matched by file stem") == 1, err
    assert "'1.tif' -> 1.webp" in err
    # the image of a split view comes through the same resolver: no second notice
    ds.split("test")[0]
    assert "matched by file stem" not in capfd.readouterr().err


def test_landuse_layout(tmp_path, capfd):
    """The unzipped UC Merced Land Use download, built from a few real images (TIFF, as distributed)."""
    src = real("ucm_images")
    picks = {"agricultural": [0, 7], "airplane": [7, 99], "tenniscourt": [3]}
    for c, nums in picks.items():
        for n in nums:
            d = tmp_path / "UCMerced_LandUse" / "Images" / c
            d.mkdir(parents=True, exist_ok=True)
            i = 100 * UCM_CLASSES.index(c) + n + 1
            open_image(src / f"{i}.webp").save(d / f"{c}{n:02d}.tif")
    (tmp_path / "UCMerced_LandUse" / "Images" / "airplane" / "notes.txt").write_text("not an image")
    lay = landuse_layout(tmp_path / "UCMerced_LandUse")
    assert sorted(lay, key=int) == ["1", "8", "108", "200", "2004"]
    assert lay["108"][1] == "airplane" and lay["108"][0].name == "airplane07.tif"
    ds = open_dataset(f"ucm:{real('ucm_captions')}", images=tmp_path / "UCMerced_LandUse")
    err = capfd.readouterr().err
    assert err.count("Land Use layout") == 1, err
    found = {}
    for i, r in enumerate(ds.records):
        if Path(r.filename).stem in lay:
            found[r.filename] = (ds.image_path(i), r.label)
    assert found["108.tif"][0].name == "airplane07.tif" and found["108.tif"][1] == "airplane"
    assert found["2004.tif"][1] == "tenniscourt"
    a = np.asarray(ds[[r.filename for r in ds.records].index("200.tif")].image)
    assert np.array_equal(a, np.asarray(open_image(src / "200.webp")))   # same pixels as the id's image
    assert "matched by file stem" not in capfd.readouterr().err      # one notice line, not two
    # the 2,095 images not laid out are unlabelled, and that is reported
    assert any("2095 of 2100 images have no label" in p.message for p in ds.problems)
    assert landuse_layout(tmp_path) is None or tmp_path.joinpath("Images").is_dir() is False


def test_example_captions_cover_classes():
    ds = _ucm().split("val")
    ex = ds.example_captions(21)
    assert len(ex) == len(set(ex)) == 21
    # one per scene class in turn: the first two come from agricultural and airplane images
    owner = {c.strip().rstrip(" .").strip(): r.label for r in ds.records for c in r.captions}
    assert owner[ex[0]] == "agricultural" and owner[ex[1]] == "airplane"
    assert ex == ds.example_captions(21)


def test_not_landuse(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cats" / "cats01.png")
    assert landuse_layout(tmp_path) is None
    assert landuse_layout(tmp_path / "nowhere") is None


def test_bad_labels_csv(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("name,kind\n1,farm\n")
    with pytest.raises(ValueError, match="want an id"):
        load_labels(p)


@pytest.mark.slow
def test_all_images_decode_and_report():
    from rsdemo.data.report import data_report, report_flags

    rep = data_report(_ucm())
    ic = rep["image_check"]
    assert ic["checked"] == 2100 and ic["by_stem"] == 2100 and not ic["unreadable"]
    assert ic["duplicates_within"] == {"train": [["102.tif", "103.tif"]]}
    assert ic["duplicates_across"] == []
    leak = {(d["split"], d["against"]): (d["shared"], d["distinct"]) for d in rep["caption_leakage"]}
    assert leak[("val", "train")] == (199, 391) and leak[("test", "train")] == (146, 377)
    flags = report_flags(rep)
    assert any("102.tif = 103.tif" in f for f in flags)
    assert any("199 of 391" in f for f in flags)
    assert rep["labels"] == {c: 100 for c in UCM_CLASSES}


@pytest.mark.slow
def test_index_all_images(tmp_path):
    from rsdemo.index import Retriever
    from rsdemo.checkpoint import load_model

    ds = _ucm()
    model = load_model("clip-tiny", device="cpu")
    r = Retriever.build(model, ds, out=tmp_path / "idx", progress=False)
    assert len(r) == 2100
    hits = r.search_text("many airplanes parked at the airport", k=5)
    assert len(hits) == 5 and all(Path(h["path"]).suffix == ".webp" for h in hits)
    again = Retriever.load(tmp_path / "idx", model)
    assert len(again) == 2100


def _ucm_cards():
    from rsdemo.checkpoint import CHECKPOINT_DIR

    import json
    cards = [(p, json.loads(p.read_text())) for p in sorted((CHECKPOINT_DIR / "ucm").glob("*.json"))]
    # the best one, and those storing tuned backbone layers beside their heads (their load path differs)
    return [p for p, c in cards if c.get("best_ucm_model") or c.get("config", {}).get("tune_top")]


@pytest.mark.slow
@pytest.mark.parametrize("card_path", _ucm_cards(), ids=lambda p: p.stem)
def test_ucm_checkpoint_reproduces_card(card_path, capsys):
    """`rsdemo eval --checkpoint ucm/<best> --data ucm:... --split val` gives the card's mR."""
    import json

    from rsdemo.cli import main

    card = json.loads(card_path.read_text())
    assert card["data"].startswith("ucm:") and "val" in card["split"] and card["metrics"]["val"]["mr"] > 30
    assert card_path.with_suffix(".safetensors").stat().st_size <= 25 * 2**20
    main(["eval", "--checkpoint", str(card_path.with_suffix(".safetensors")), "--data",
          f"ucm:{real('ucm_captions')}", "--images", str(real("ucm_images")), "--split", "val", "--json"])
    got = json.loads(capsys.readouterr().out)
    # the CLI's numbers are the recall of this process's scores; those reproduce the card as rsdemo.drift defines
    # it: exactly on the kernels that wrote the card, within the measured drift's interval on any other
    from rsdemo import drift
    from rsdemo.evaluate import recall

    s = drift.card_scores(card_path)
    assert s["split"] == "val"
    here = recall(s["full"], s["owner"])
    assert {k: got[k] for k in here} == here
    problems = drift.check(card, "val", s["full"], s["embed"], s["owner"])
    assert not problems, f"{card_path.stem} on {drift.kernel_setting()}: " + "; ".join(problems)


def test_dual_label_uses_scene_classes():
    """dual-label: class posteriors join the embedding and the label loss trains the class heads (no data needed)."""
    import torch

    from rsdemo.data import synthetic as S
    from rsdemo.models.factory import create_model

    worlds = list(S.generate(6, seed=3))
    images = [Image.fromarray(w.image) for w in worlds]
    caps = [w.captions[0] for w in worlds]
    labels = [w.label for w in worlds]
    torch.manual_seed(0)
    m = create_model("dual-label-lite0", classes=sorted(set(labels)))
    k = len(set(labels))
    with torch.no_grad():
        x = m.preprocess(images)
        e = m.encode_image(x)
        assert e.shape == (6, 256 + k) and m.embed_dim == 256 + k
        assert torch.allclose(m.score(x, caps), e @ m.encode_text(caps).T, atol=1e-5)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(6):
        out = TrainStep(m)(x, caps, caps, labels, list(range(6)))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["label_ce"].item()
    assert out["label_ce"].item() < first
    ex = m.explain(images[0], caps[0])
    assert ex.notes["image_class"] in m.classes and abs(ex.score - float(m.score(x[:1], caps[:1]).detach())) < 1e-3


def test_amfmn_ranking_code_matches_recall_without_ties():
    """scripts/ucm.py's replica of AMFMN's argsort ranking: equal to rsdemo.recall when no score ties, and between
    the pessimistic and optimistic rules when captions tie."""
    import importlib.util

    from rsdemo.evaluate import recall

    spec = importlib.util.spec_from_file_location("ucm_script", Path(__file__).resolve().parents[1] / "scripts" / "ucm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    owner = np.repeat(np.arange(30), 5)
    sim = rng.normal(size=(30, 150))
    got, ref = mod.amfmn_code_recall(sim, owner), recall(sim, owner)
    assert all(got[k] == pytest.approx(ref[k]) for k in got)
    tied = np.round(sim, 0)   # many exact ties
    lo, hi = recall(tied, owner)["mr"], recall(tied, owner, ties="optimistic")["mr"]
    assert lo <= mod.amfmn_code_recall(tied, owner)["mr"] <= hi and lo < hi


def _ucm_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ucm_script", Path(__file__).resolve().parents[1] / "scripts" / "ucm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grounding_row_over_seeds_and_its_table():
    """scripts/ucm.py's "ucm_grounding" rows: retrieval and map figures are means over the seeds given, with the
    sample sd; a row measured once shows no sd; Grad-CAM of the same checkpoints sits beside the map."""
    from rsdemo import results

    mod = _ucm_script()
    runs = [{"val": {"mr": v}, "val_amfmn_code": {"mr": v + 5}} for v in (44.0, 46.0, 45.0)]
    maps = [{"maps": {"roam_score": {"hit": h, "energy": 40.0, "object_hit": 60.0, "deletion": 30.0,
                                     "insertion": 80.0},
                      "baseline_gradcam": {"deletion": 50.0, "insertion": 70.0}}} for h in (90.0, 94.0)]
    row = mod._ground_row("`dove-lite0`", "full", runs, maps, "roam_score")
    assert row["val_mr"] == pytest.approx(45.0) and row["val_mr_sd"] == pytest.approx(1.0)
    assert row["code_mr"] == pytest.approx(50.0) and row["hit"] == pytest.approx(92.0)
    assert row["hit_sd"] == pytest.approx(2 * 2 ** 0.5)                     # sample sd of 90, 94
    assert (row["seeds"], row["measured"], row["gc_deletion"]) == (3, 2, 50.0)
    one = mod._ground_row("`x`", "full", runs[:1], maps[:1], "roam_score")
    text = results.table({"columns": mod.GROUND_COLUMNS, "rows": [row, one]})
    assert "| 45.00 ± 1.00 |" in text and "| 92.0 ± 2.8 |" in text and "| 30.0 / 50.0 |" in text
    assert "| 90.0 |" in text and "| 44.00 |" in text        # one seed: no sd


def test_grounding_recipe_takes_the_adopted_input_lever():
    """scripts/ucm.py's grounding recipe: the dev-chosen weight and epochs (or the carried-over weight), plus the
    input lever the dev blocks adopted, with that run's dev epochs; none adopted: the recipe as it was."""
    mod = _ucm_script()
    chosen = {"set": {"tune_top": True, "score_map": True, "train.mosaic_weight": 0.5}, "best_epoch": 3}
    res = {"dev": {"a": {"set": {"tune_top": True}}, "b": {"set": {"tune_top": True}}},
           "ground": {"a": {"chosen": "w=0.5", "dev": {"w=0.5": chosen}},
                      "b": {"transfer": {"weight": 2.0, "epochs": 2},
                            "inputs": {"adopted": "views", "runs": {"views": {"best_epoch": 1}}}}}}
    assert mod.ground_recipe(res, "a") == (3, chosen["set"])
    assert mod.ground_recipe(res, "b", inputs=False) == (2, {"tune_top": True, "score_map": True,
                                                          "train.mosaic_weight": 2.0})
    assert mod.ground_recipe(res, "b") == (1, {"tune_top": True, "score_map": True, "train.mosaic_weight": 2.0,
                                               **mod.INPUT_LEVERS["views"]})
    # object mosaics adopted (ground-objects): that run's recipe and dev epochs; objects=False: the recipe before
    with_objects = {**mod.ground_recipe(res, "b")[1], **mod.object_lever()}
    res["ground"]["b"]["objects"] = {"adopted": True, "runs": {"base": {"set": mod.ground_recipe(res, "b")[1]},
                                                               "objects": {"set": with_objects, "best_epoch": 2}}}
    assert mod.ground_recipe(res, "b") == (2, with_objects)
    assert mod.ground_recipe(res, "b", objects=False) == (1, {k: v for k, v in with_objects.items()
                                                              if k not in mod.object_lever()})
    assert not mod.object_lever()["train.multilabels"].startswith("/")    # no machine's path in a recipe
    assert mod.recipe_label(with_objects).endswith(", object mosaics")
    res["ground"]["b"]["objects"]["runs"]["base"]["set"] = {"tune_top": False}   # tried on another recipe
    assert mod.ground_recipe(res, "b") == (1, mod.ground_recipe(res, "b", objects=False)[1])
    del res["ground"]["b"]["objects"]
    res["ground"]["b"]["inputs"]["adopted"] = None
    assert mod.ground_recipe(res, "b")[0] == 2
    assert mod.ground_recipe(res, "c") is None
    assert mod.recipe_label({**chosen["set"], "backbone": "efficientnet_lite2", "image_size": 224}) == \
        ", mosaic weight 0.5, Lite2, 224 px"
    assert mod.recipe_label({"train.views": 8}) == ", mosaic weight 0, dihedral views"
    assert mod.recipe_label({"train.mosaic_weight": 2.0, **mod.INPUT_LEVERS["finetune"]}) == \
        ", mosaic weight 2, whole backbone trained"


def test_base_dev_run_is_the_recipe_without_a_lever(tmp_path, monkeypatch):
    """scripts/ucm.py ground-tta reads the dev run of the recipe without an input lever: the weight's own grounding
    dev run where ground-inputs took it from there, else devinputs-<model>-base when it holds today's recipe."""
    mod = _ucm_script()
    monkeypatch.setattr(mod, "RUNS", tmp_path)
    res = {"dev": {"a": {"set": {"tune_top": True}}},
           "ground": {"a": {"transfer": {"weight": 2.0, "epochs": 2}},
                      "b": {"inputs": {"runs": {"base": {"from": "ground-dev w=0.5"}}}}}}
    assert mod.base_dev_dir(res, "b") == tmp_path / "devground-b-w=0.5"
    assert mod.base_dev_dir(res, "a") is None                  # no run yet
    run = tmp_path / "devinputs-a-base"
    run.mkdir()
    (run / "recipe.json").write_text(json.dumps({"set": {"tune_top": True, "score_map": True,
                                                         "train.mosaic_weight": 1.0}, "epochs": mod.GROUND_EPOCHS}))
    assert mod.base_dev_dir(res, "a") is None                  # another weight's run
    (run / "recipe.json").write_text(json.dumps({"set": mod.ground_recipe(res, "a", inputs=False)[1],
                                                 "epochs": mod.GROUND_EPOCHS}))
    assert mod.base_dev_dir(res, "a") == run


def test_finished_dev_run_is_reused_only_for_its_exact_recipe(tmp_path, monkeypatch):
    """scripts/ucm.py finished_run: a dev step reads another step's finished run of the same recipe; an unfinished
    run, another recipe, or a run on another dev block (ground-blocks records its block) is not reused."""
    mod = _ucm_script()
    monkeypatch.setattr(mod, "RUNS", tmp_path)
    recipe = {"set": {"tune_top": True, "train.mosaic_weight": 2.0}, "epochs": 3}

    def run(name, rec, finished=True):
        d = tmp_path / name
        d.mkdir()
        (d / "recipe.json").write_text(json.dumps(rec))
        (d / "best.safetensors").write_bytes(b"")
        if finished:
            (d / "last.json").write_text("{}")
        return d

    run("devblock6-a-base", {**recipe, "block": 6})
    run("devground-a-w=2", recipe, finished=False)
    run("devground-a-w=1", {**recipe, "set": {"tune_top": True, "train.mosaic_weight": 1.0}})
    assert mod.finished_run("a", recipe) is None
    assert mod.finished_run("a", {**recipe, "block": 6}) == tmp_path / "devblock6-a-base"
    done = run("devinputs-a-base", recipe)
    assert mod.finished_run("a", recipe) == done and mod.finished_run("b", recipe) is None


def _fake_train(trained: list, card: dict | None = None):
    """Stands in for scripts/ucm.py rsdemo(train ...): records the run directory's name and writes a finished run
    there (with `card` as best.json when given)."""
    def fake(*argv, log=None):
        out = Path(argv[argv.index("--out") + 1])
        trained.append(out.name)
        for f in ("best.safetensors", "last.json"):
            (out / f).write_text("{}")
        if card is not None:
            (out / "best.json").write_text(json.dumps(card))
        return ""
    return fake


def test_ground_objects_runs_measures_and_adopts_by_its_rule(tmp_path, monkeypatch):
    """scripts/ucm.py ground-objects: the recipe's finished dev run is read, the object run trained once (a rerun
    reads both from docs/ucm.json), both measured with object mosaics; adopted only by the stated rule, and then
    part of the recipe; what another step saved meanwhile in the model's entry survives."""
    import argparse

    mod = _ucm_script()
    for name, value in (("RUNS", tmp_path / "runs"), ("RESULTS", tmp_path / "ucm.json"),
                        ("MULTILABELS", tmp_path / "ml")):
        monkeypatch.setattr(mod, name, value)
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "labels_by_id.csv").write_text("id,cars\n1,1\n")
    monkeypatch.setattr(mod, "make_dev", lambda args, block=7: tmp_path / "dev")
    chosen = {"set": {"tune_top": True, "score_map": True, "train.mosaic_weight": 2.0}, "best_epoch": 3}
    mod.RESULTS.write_text(json.dumps({"runs": {}, "dev": {}, "ground": {
        "ccnet-lite0": {"chosen": "w=2", "dev": {"w=2": chosen}}}}))
    base_run = mod.RUNS / "devground-ccnet-lite0-w=2"
    base_run.mkdir(parents=True)
    trained = []
    fake_rsdemo = _fake_train(trained, {"best_epoch": 2, "metrics": {"val": {"mr": 42.0}}})

    for f in ("best.safetensors", "last.json"):
        (base_run / f).write_text("{}")
    (base_run / "best.json").write_text(json.dumps({"best_epoch": 3, "metrics": {"val": {"mr": 42.35}}}))
    (base_run / "recipe.json").write_text(json.dumps({"set": chosen["set"], "epochs": mod.GROUND_EPOCHS}))
    hits = {"devground-ccnet-lite0-w=2": (83.0, 50.0), "devobjects-ccnet-lite0-objects": (81.0, 70.0)}

    def fake_grounding(ck, args, split, labels=None, **kw):
        assert split == "dev" and labels == {"1": {"cars"}} and kw["per_object"] == mod.OBJECT_DEV_PER_WORD
        hit, obj = hits[ck.parent.name]
        return {"maps": {"tam_cfm_score": {"hit": hit, "energy": 60.0, "object_hit": obj, "object_energy": 40.0}},
                "objects": {"ap": 30.0}}

    monkeypatch.setattr(mod, "rsdemo", fake_rsdemo)
    monkeypatch.setattr(mod, "grounding_of", fake_grounding)
    args = argparse.Namespace(models=["ccnet-lite0"], force=False, images=None)
    mod.ground_objects(args)
    assert trained == ["devobjects-ccnet-lite0-objects"]                # the recipe's own run was read
    o = mod.load_results()["ground"]["ccnet-lite0"]["objects"]
    assert o["adopted"] and o["runs"]["objects"]["object_hit"] == 70.0 and o["runs"]["base"]["dev_mr"] == 42.35
    assert mod.ground_recipe(mod.load_results(), "ccnet-lite0") == (2, {**chosen["set"], **mod.object_lever()})
    # another step saves its own key of the entry from a copy read before: the objects entry stays
    stale = {"runs": {}, "dev": {}, "ground": {"ccnet-lite0": {"chosen": "w=2", "dev": {"w=2": chosen}, "tta": 1}}}
    mod.save_results(stale, "ground", "ccnet-lite0")
    assert mod.load_results()["ground"]["ccnet-lite0"]["objects"] == o
    mod.ground_objects(args)
    assert len(trained) == 1                                            # nothing retrained
    # a scene-hit loss beyond the slack: not adopted, and the recipe is the one without objects
    hits["devobjects-ccnet-lite0-objects"] = (83.0 - mod.LEVER_HIT_SLACK - 1, 90.0)
    hits["devobjects-ccnet-lite0-base"] = hits["devground-ccnet-lite0-w=2"]     # --force retrains both
    mod.ground_objects(argparse.Namespace(models=["ccnet-lite0"], force=True, images=None))
    assert trained[1:] == ["devobjects-ccnet-lite0-base", "devobjects-ccnet-lite0-objects"]
    assert not mod.load_results()["ground"]["ccnet-lite0"]["objects"]["adopted"]
    assert mod.ground_recipe(mod.load_results(), "ccnet-lite0") == (3, chosen["set"])


def test_dev_blocks_hold_out_ten_ids_of_each_class(tmp_path, monkeypatch):
    """scripts/ucm.py make_dev: block 7 (the dev split) holds out ids 70-79 of each class, another block its own
    ten; the rest of the train ids train; val and test ids are never read."""
    mod = _ucm_script()
    monkeypatch.setattr(mod, "RUNS", tmp_path / "runs")
    data = tmp_path / "ucm"
    data.mkdir()
    ids = [i for c in range(2) for i in range(100 * c + 1, 100 * c + 81)]       # train ids: 1-80 of each class
    (data / "data_train_UCM.json").write_text(json.dumps(
        {"images": [{"id": i} for i in ids], "annotations": [{"image_id": i, "caption": "x"} for i in ids]}))
    args = type("A", (), {"data": str(data)})()
    for block, folder, held in ((7, "dev", (71, 80)), (6, "dev-b6", (61, 70))):
        out = mod.make_dev(args, block)
        assert out == tmp_path / "runs" / folder
        val = json.loads((out / "data_val_UCM.json").read_text())
        train = json.loads((out / "data_train_UCM.json").read_text())
        want = [i for c in range(2) for i in range(100 * c + held[0], 100 * c + held[1] + 1)]
        assert sorted(im["id"] for im in val["images"]) == want
        assert sorted(a["image_id"] for a in val["annotations"]) == want
        assert len(train["images"]) == len(ids) - len(want) and not set(want) & {im["id"] for im in train["images"]}


def test_ground_inputs_adopts_a_lever_for_the_maps_by_its_own_rule(tmp_path, monkeypatch):
    """scripts/ucm.py ground-inputs: a lever for the maps (roam-mosaic, DOVE's only) is adopted when the own map's
    dev hits rise and dev mR drops by at most GROUND_MR_SLACK, and only where no retrieval lever (dev mR up) is;
    it is run for its own model only."""
    import argparse

    mod = _ucm_script()
    monkeypatch.setattr(mod, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "ucm.json")
    monkeypatch.setattr(mod, "make_dev", lambda args, block=7: tmp_path / "dev")
    chosen = {"set": {"tune_top": True, "score_map": True, "train.mosaic_weight": 2.0}, "best_epoch": 3,
              "dev_mr": 42.65, "hit": 63.0}
    mod.RESULTS.write_text(json.dumps({"runs": {}, "dev": {}, "ground": {
        m: {"chosen": "w=2", "dev": {"w=2": chosen}} for m in ("dove-lite0", "ccnet-lite0")}}))
    trained = []
    fake_rsdemo = _fake_train(trained)

    got = {"base": (42.65, 63.0), "text-top2": (42.5, 70.0), "roam-mosaic": (42.0, 85.0)}
    monkeypatch.setattr(mod, "rsdemo", fake_rsdemo)
    monkeypatch.setattr(mod, "dev_result", lambda m, tag, out, variant, args: {
        "set": variant, "best_epoch": 3, "dev_mr": got[tag][0], "hit": got[tag][1]})

    def run(m, levers, force=False):
        mod.ground_inputs(argparse.Namespace(models=[m], force=force, images=None, levers=levers))
        return mod.load_results()["ground"][m]["inputs"]

    a = run("dove-lite0", ["text-top2", "roam-mosaic"])
    assert a["adopted"] == "roam-mosaic" and a["runs"]["base"]["from"] == "ground-dev w=2"
    assert trained == ["devinputs-dove-lite0-text-top2", "devinputs-dove-lite0-roam-mosaic"]
    assert mod.ground_recipe(mod.load_results(), "dove-lite0") == (3, {**chosen["set"], "roam_mosaic": True})
    got["text-top2"] = (43.0, 60.0)                     # a retrieval lever that qualifies comes first
    assert run("dove-lite0", ["text-top2", "roam-mosaic"], force=True)["adopted"] == "text-top2"
    got.update({"text-top2": (42.0, 70.0), "roam-mosaic": (42.65 - mod.GROUND_MR_SLACK - 0.1, 90.0)})
    assert run("dove-lite0", ["text-top2", "roam-mosaic"], force=True)["adopted"] is None
    trained.clear()
    assert "roam-mosaic" not in run("ccnet-lite0", ["text-top2", "roam-mosaic"])["runs"]   # DOVE's option only
    assert trained == ["devinputs-ccnet-lite0-text-top2"]
