"""Caption-format loaders: tiny generated fixtures, malformed inputs, and the real annotation files."""
from __future__ import annotations

import json

import pytest

from rsdemo.data.dataset import DataError, Span
from rsdemo.data.formats import (detect_format, load, load_coco, load_folder, load_karpathy, load_precomp,
                                 open_dataset, save_karpathy)

try:
    from . import fixtures as fx
except ImportError:
    import fixtures as fx


real = fx.real


def texts(ds):
    return [str(p) for p in ds.problems]


# ---- Karpathy ---------------------------------------------------------------------------------

def test_karpathy_loads_fixture(tmp_path):
    path = fx.write_karpathy(tmp_path)
    ds = load_karpathy(path, images=tmp_path / "images")
    assert ds.name == "tiny" and ds.source == str(path)
    assert [r.filename for r in ds.records] == ["farm_1.tif", "harbour_2.tif", "city_3.tif", "forest_4.tif",
                                                "synth_5.tif"]
    assert ds.split_counts() == {"train": 2, "val": 1, "test": 2}
    assert ds.records[0].captions == fx.caps("farm")
    assert ds.records[0].label == "farm" and ds.records[0].keywords == ["farm", "field"]
    assert ds.records[0].spans is None and ds.records[0].mask is None
    # blank caption dropped, the image keeps the other 4
    h = ds.records[1]
    assert len(h.captions) == 4 and "   " not in h.captions
    assert ds.num_captions == 5 + 4 + 4 + 5 + 5


def test_karpathy_extension_fields_round_trip(tmp_path):
    path = fx.write_karpathy(tmp_path)
    ds = load_karpathy(path, images=tmp_path / "images")
    s = ds.records[4]
    assert s.label == "Synthetic Scene" and s.mask == "masks/synth_5.png"
    assert s.objects == fx.SYNTH_OBJECTS and s.keywords == ["house", "tree"]
    assert s.spans == [[Span(sp["start"], sp["end"], tuple(sp["objects"])) for sp in c] for c in fx.SYNTH_SPANS]
    assert ds.masks(4).max() == 2
    # write it back out and read again: every field survives
    save_karpathy(ds, tmp_path / "again.json")
    again = load_karpathy(tmp_path / "again.json")
    assert [vars(r) for r in again.records] == [vars(r) for r in ds.records]


def test_karpathy_problems(tmp_path):
    ds = load_karpathy(fx.write_karpathy(tmp_path))
    p = texts(ds)
    assert any("images[1].sentences[2] (harbour_2.tif): blank caption" in t for t in p)
    counts = [t for t in p if "most images have 5" in t]
    assert len(counts) == 2 and any("harbour_2.tif" in t for t in counts) and any("city_3.tif" in t for t in counts)


def test_karpathy_images_resolve_by_stem(tmp_path):
    ds = load_karpathy(fx.write_karpathy(tmp_path), images=tmp_path / "images")
    assert ds.image_path(0).name == "farm_1.png"
    assert ds[0].image.size == (8, 8) and ds[0].image.getpixel((0, 0)) == fx.RED
    assert load_karpathy(tmp_path / "dataset_tiny.json").image_root is None


def test_karpathy_raw_missing(tmp_path):
    doc = fx.karpathy_doc()
    del doc["images"][2]["sentences"][3]["raw"]          # tokens still there: rebuilt, reported
    (tmp_path / "a.json").write_text(json.dumps(doc))
    ds = load_karpathy(tmp_path / "a.json")
    assert ds.records[2].captions[3] == "There is a city number 3 ."
    assert any("images[2].sentences[3]" in t and "rebuilt from 'tokens'" in t for t in texts(ds))
    del doc["images"][2]["sentences"][3]["tokens"]
    (tmp_path / "dataset_RSITMD.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"dataset_RSITMD\.json: images\[2\]\.sentences\[3\]: missing 'raw'"):
        load_karpathy(tmp_path / "dataset_RSITMD.json")


@pytest.mark.parametrize("field", ["filename", "split", "sentences"])
def test_karpathy_missing_field(tmp_path, field):
    doc = fx.karpathy_doc()
    del doc["images"][3][field]
    (tmp_path / "d.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"d\.json: images\[3\]: missing '{field}'"):
        load_karpathy(tmp_path / "d.json")
    (tmp_path / "e.json").write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(DataError, match=r"e\.json: top level: missing 'images'"):
        load_karpathy(tmp_path / "e.json")


def test_karpathy_bad_span(tmp_path):
    doc = fx.karpathy_doc()
    del doc["images"][4]["sentences"][0]["spans"][1]["end"]
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"s\.json: images\[4\]\.sentences\[0\]\.spans\[1\]: missing 'end'"):
        load_karpathy(tmp_path / "s.json")


def test_truncated_json(tmp_path):
    text = json.dumps(fx.karpathy_doc(), indent=1)
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"cut\.json: invalid JSON at line \d+, column \d+"):
        load_karpathy(tmp_path / "cut.json")


# ---- COCO -------------------------------------------------------------------------------------

def test_coco_folder(tmp_path):
    root = fx.write_coco(tmp_path)
    ds = load_coco(root, images=root / "images")
    assert [r.filename for r in ds.records] == ["1.tif", "2.tif", "3.tif", "4.tif", "5.tif"]   # by image id
    assert [r.split for r in ds.records] == ["train", "train", "train", "val", "test"]
    assert ds.records[0].captions == fx.caps("scene 1")
    assert len(ds.records[1].captions) == 4 and "" not in ds.records[1].captions
    p = texts(ds)
    assert any("data_train_tiny.json: annotations[11] (2.tif): blank caption" in t for t in p)
    assert sum("most images have 5" in t for t in p) == 2
    assert ds.image_path(4).name == "5.png" and ds[4].image.getpixel((3, 3)) == fx.YELLOW


def test_coco_single_file(tmp_path):
    root = fx.write_coco(tmp_path)
    ds = load_coco(root / "data_val_tiny.json")
    assert len(ds) == 1 and ds.records[0].split == "val" and ds.image_root is None


def test_coco_split_from_name(tmp_path):
    root = fx.write_coco(tmp_path)
    (root / "data_val_tiny.json").rename(tmp_path / "captions.json")
    assert load_coco(tmp_path / "captions.json").records[0].split == "train"


def test_coco_orphan_annotation_and_duplicate_id(tmp_path):
    root = fx.write_coco(tmp_path)
    doc = json.loads((root / "data_test_tiny.json").read_text())
    doc["images"].append({"file_name": "1.tif", "id": 1})          # id 1 is also in train
    doc["annotations"].append({"image_id": 1, "id": 99, "caption": "again one"})
    (root / "data_test_tiny.json").write_text(json.dumps(doc))
    ds = load_coco(root)
    assert any("data_test_tiny.json: images[1]: image id 1 (1.tif) also in" in t for t in texts(ds))
    doc["annotations"].append({"image_id": 77, "id": 100, "caption": "nobody"})
    (root / "data_test_tiny.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"data_test_tiny\.json: annotations\[5\]: image_id 77"):
        load_coco(root)


# ---- precomp ----------------------------------------------------------------------------------

def test_precomp_both_layouts(tmp_path):
    root = fx.write_precomp(tmp_path / "tiny")
    assert load_precomp(root).split_counts() == {"train": 3, "test": 2}  # extra folds only when asked
    ds = load_precomp(root, splits=["train", "test", "val_verify"])
    assert ds.name == "tiny"
    assert ds.split_counts() == {"train": 3, "test": 2, "val_verify": 1}
    assert [r.filename for r in ds.records] == fx.PRECOMP["train"] + fx.PRECOMP["test"] + fx.PRECOMP["val_verify"]
    assert ds.records[0].captions[2] == "There is a beach_1 number 2 ."       # trailing spaces stripped
    assert ds.records[1].captions == [c for k, c in enumerate(fx.caps("beach_2")) if k != 2]
    assert ds.records[3].captions == fx.caps("port_4") and ds.records[3].label == "port"
    p, caps_file = texts(ds), root / "train_caps.txt"
    assert [t for t in p if "blank caption" in t] == [f"{caps_file}: line 8 (beach_2.tif): blank caption"]
    assert [t for t in p if "most images" in t] == [f"{caps_file}: beach_2.tif: 4 captions (most images have 5)"]


def test_precomp_split_selection_and_single_file(tmp_path):
    root = fx.write_precomp(tmp_path)
    assert load_precomp(root, splits=["test"]).split_counts() == {"test": 2}
    assert load_precomp(root / "val_caps_verify.txt").split_counts() == {"val_verify": 1}
    with pytest.raises(DataError, match="no split val"):
        load_precomp(root, splits="val")


def test_precomp_all_blank_image_kept(tmp_path):
    (tmp_path / "train_caps.txt").write_text("a\nb\n\n \n")
    (tmp_path / "train_filename.txt").write_text("x_1.tif\nx_1.tif\ny_2.tif\ny_2.tif\n")
    ds = load_precomp(tmp_path)
    assert [(r.filename, r.captions) for r in ds.records] == [("x_1.tif", ["a", "b"]), ("y_2.tif", [])]
    assert sum("blank caption" in t for t in texts(ds)) == 2


def test_precomp_count_mismatch(tmp_path):
    # 3 captions per image: reported, still loaded
    (tmp_path / "train_caps.txt").write_text("\n".join(f"c{k}" for k in range(6)) + "\n")
    (tmp_path / "train_filename.txt").write_text("a.tif\nb.tif\n")
    ds = load_precomp(tmp_path)
    assert [r.captions for r in ds.records] == [["c0", "c1", "c2"], ["c3", "c4", "c5"]]
    assert any("6 caption lines for 2 filenames in train_filename.txt" in t for t in texts(ds))
    # 7 captions for 2 images: cannot align
    (tmp_path / "train_caps.txt").write_text("\n".join(f"c{k}" for k in range(7)) + "\n")
    with pytest.raises(DataError, match=r"train_caps\.txt has 7 caption lines and .*train_filename\.txt has 2"):
        load_precomp(tmp_path)


def test_precomp_missing_filename_file(tmp_path):
    (tmp_path / "test_caps.txt").write_text("a\n")
    with pytest.raises(DataError, match="test_filename.txt"):
        load_precomp(tmp_path)


# ---- folder + CSV -----------------------------------------------------------------------------

def test_folder(tmp_path):
    root = fx.write_folder(tmp_path)
    ds = load_folder(root)
    assert ds.image_root == root and ds.source == str(root / "captions.csv")
    assert [r.filename for r in ds.records] == ["a.png", "b.png", "c.png", "broken.png"]   # d.png not in CSV
    assert ds.records[0].captions == ["a red square", "red everywhere", "only red"]
    assert ds.records[1].captions == ["a green square", "only green"]
    assert ds.records[2].split == "test" and ds.records[2].label == "water" and ds.records[0].label is None
    assert ds.split_counts() == {"train": 2, "test": 1, "val": 1}
    p = texts(ds)
    assert f"{root / 'captions.csv'}: line 6 (b.png): empty caption" in p
    assert ds[2].image.getpixel((0, 0)) == fx.BLUE
    assert load_folder(root / "captions.csv").num_captions == ds.num_captions


def test_folder_missing_column(tmp_path):
    (tmp_path / "captions.csv").write_text("image,text\na.png,hello\n")
    with pytest.raises(DataError, match=r"captions\.csv: line 1: missing column 'caption'"):
        load_folder(tmp_path)
    (tmp_path / "captions.csv").write_text("file,caption\na.png,hello\n")
    with pytest.raises(DataError, match=r"captions\.csv: line 1: missing column 'image'"):
        load_folder(tmp_path)
    (tmp_path / "captions.csv").write_text("Filename,Caption\na.png,hello\n")
    assert load_folder(tmp_path).records[0].captions == ["hello"]


# ---- detection and specs ----------------------------------------------------------------------

def test_detect_and_open(tmp_path):
    k = fx.write_karpathy(tmp_path / "k", images=False)
    c = fx.write_coco(tmp_path / "c", images=False)
    p = fx.write_precomp(tmp_path / "p")
    f = fx.write_folder(tmp_path / "f")
    assert detect_format(k) == "karpathy" and detect_format(k.parent) == "karpathy"
    assert detect_format(c) == "coco" and detect_format(c / "data_train_tiny.json") == "coco"
    assert detect_format(p) == "precomp" and detect_format(p / "train_caps.txt") == "precomp"
    assert detect_format(f) == "folder" and detect_format(f / "captions.csv") == "folder"
    assert len(open_dataset(f"rsitmd:{k}")) == 5
    assert len(open_dataset(str(k.parent))) == 5
    assert len(open_dataset(f"ucm:{c}")) == 5
    assert len(open_dataset(f"amfmn:{p}")) == 5 and len(open_dataset(f"ucm:{p}")) == 5  # train + test
    assert len(open_dataset(f"csv:{f / 'captions.csv'}")) == 4
    assert len(load(p, "precomp", splits="train")) == 3
    ds = open_dataset(f"coco:{c}", images=tmp_path)
    assert ds.image_root == tmp_path
    with pytest.raises(DataError, match="unknown format 'bogus'"):
        open_dataset(f"bogus:{c}")
    with pytest.raises(DataError, match="no such file"):
        open_dataset(str(tmp_path / "nothing"))


def test_ucm_alias_prefers_coco_then_precomp_then_karpathy(tmp_path):
    fx.write_precomp(tmp_path)
    fx.write_karpathy(tmp_path, images=False)
    assert open_dataset(f"ucm:{tmp_path}").split_counts() == {"train": 3, "test": 2}
    assert open_dataset(f"sydney:{tmp_path}").name == "tiny"          # karpathy
    fx.write_coco(tmp_path, images=False)
    assert open_dataset(f"ucm:{tmp_path}").split_counts() == {"train": 3, "val": 1, "test": 1}


# ---- real annotation files (shared/data, README counts) ---------------------------------------

@pytest.mark.parametrize("name,splits,captions", [
    ("rsitmd", {"train": 4291, "test": 452}, {"train": 21455 - 20, "test": 2260}),
    ("rsicd", {"train": 9828, "test": 1093}, {"train": 49140, "test": 5465}),
    ("ucm", {"train": 1680, "test": 210}, {"train": 8400, "test": 1050}),
    ("sydney", {"train": 497, "test": 58, "train_verify": 397, "val_verify": 100},
     {"train": 2485, "test": 290, "train_verify": 1985, "val_verify": 500}),
])
def test_real_precomp_counts(name, splits, captions):
    ds = load_precomp(real(f"amfmn_precomp/{name}"), splits=list(splits))
    assert ds.split_counts() == splits
    for s, n in captions.items():
        assert ds.split(s).num_captions == n
    if name != "rsitmd":
        assert ds.problems == []


def test_real_rsitmd_blank_lines():
    ds = open_dataset(f"precomp:{real('amfmn_precomp/rsitmd')}")
    blank = [p for p in ds.problems if p.message == "blank caption"]
    assert len(blank) == 20 and all(p.file.endswith("train_caps.txt") for p in blank)
    names = {p.where.split("(")[1].rstrip(")") for p in blank}
    assert names == {"mountain_2378.tif", "railwaystation_3254.tif", "storagetanks_4367.tif", "viaduct_4635.tif"}
    # README gives 0-based lines 9630-9634 ...; problems use 1-based numbers
    assert sorted(int(p.where.split()[1]) for p in blank)[:5] == [9631, 9632, 9633, 9634, 9635]
    empty = [r.filename for r in ds.records if not r.captions]
    assert sorted(empty) == sorted(names)
    assert sum("0 captions (most images have 5)" in str(p) for p in ds.problems) == 4
    # trailing spaces are stripped (1-based line 377 of train_caps.txt is one of them)
    assert all(c == c.strip() for r in ds.records for c in r.captions)


def test_real_ucm_coco():
    ds = load_coco(real("ucm_captions"))
    assert ds.split_counts() == {"train": 1680, "test": 210, "val": 210}
    assert ds.num_captions == 10500 and ds.problems == []
    assert [r.filename for r in ds.records] == [f"{i}.tif" for i in range(1, 2101)]
    assert all(len(r.captions) == 5 for r in ds.records)
    assert ds.records[0].captions[0] == "There is a piece of farmland ."


def test_real_ucm_coco_images_by_stem():
    ds = load_coco(real("ucm_captions"), images=real("ucm_images"))
    paths = [ds.image_path(i) for i in range(len(ds))]
    assert all(p.suffix == ".webp" and p.stem == r.filename[:-4] for p, r in zip(paths, ds.records))
    assert ds._resolver.stem_matches == 2100
    assert ds[101].image.size == (256, 256)


def test_real_ucm_karpathy():
    ds = open_dataset(f"ucm:{real('ucm_captions/dataset_ucm_modified.json')}")
    assert len(ds) == 2100 and ds.num_captions == 10500
    assert ds.split_counts() == {"train": 1680, "val": 210, "test": 210}
    assert ds.problems == []
    coco = load_coco(real("ucm_captions"))
    assert [(r.filename, r.split) for r in ds.records] == [(r.filename, r.split) for r in coco.records]
    # README defect 7: 11 sentences in 8 images differ from the COCO copy
    diff = [r.filename for r, c in zip(ds.records, coco.records) if r.captions != c.captions]
    assert sorted(diff, key=lambda f: int(f[:-4])) == ["124.tif", "174.tif", "465.tif", "466.tif", "1826.tif",
                                                       "1836.tif", "2000.tif", "2059.tif"]


def test_real_sydney_karpathy():
    ds = open_dataset(str(real("sydney_captions")))
    assert ds.name == "Sydney" and len(ds) == 613 and ds.num_captions == 3065
    assert ds.split_counts() == {"train": 497, "val": 58, "test": 58}
    # README defect 9: 363.tif lists 362.tif's sentids
    assert len(ds.problems) == 1 and "363.tif" in str(ds.problems[0]) and "sentids" in str(ds.problems[0])


def test_real_precomp_matches_coco_captions():
    pre = load_precomp(real("amfmn_precomp/ucm"))
    coco = {r.filename: r for r in load_coco(real("ucm_captions")).records}
    assert all(coco[r.filename].captions == r.captions for r in pre.records)
    # README: AMFMN test = the COCO files' val images
    assert {coco[r.filename].split for r in pre.split("test").records} == {"val"}


def test_real_rsicd_labels_file_has_no_captions():
    with pytest.raises(DataError, match=r"classification_dataset_rsicd\.json: images\[0\]: missing 'sentences'"):
        load(real("rsicd_labels/classification_dataset_rsicd.json"))


def test_real_rsitmd_sample_image():
    ds = load_precomp(real("amfmn_precomp/rsitmd"), images=real("samples/rsitmd"), splits="train")
    i = next(k for k, r in enumerate(ds.records) if r.filename == "sparseresidential_3814.tif")
    want = json.loads((real("samples/rsitmd") / "captions.json").read_text())["images"][0]["captions"]
    assert ds.records[i].captions == want and ds.records[i].label == "sparseresidential"
    assert ds[i].image.size == (256, 256)
