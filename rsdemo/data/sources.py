"""Datasets by name: where to download them, how to check them, how they are laid out on disk.

`ucm` is UC Merced Land Use (2,100 aerial photos, 21 classes; public-domain USGS imagery, Yang & Newsam, ACM GIS
2010) with the UCM-captions annotation files (Qu et al. 2016, as published in xiaoyuan1996/RemoteSensingCaptions).
`fetch("ucm")` brings both into `$RSDEMO_CACHE/datasets/ucm/` (default ~/.cache/rsdemo):

    ucm_captions/data_{train,val,test}_UCM.json    the annotation files, unchanged
    UCMerced_LandUse/Images/<class>/<class>NN.tif  the Land Use archive's own layout, read in place
                                                   (rsdemo.data.formats maps it to UCM-captions ids)

What we decided:
- Verification does not depend on an archive's checksum (mirrors repack archives): the committed manifest
  (manifests/ucm.json, written by scripts/ucm_manifest.py from the project's reference copy) holds the sha256 of
  every image's *decoded pixels* (8-bit RGB array, height x width x 3, row-major) and of every annotation file.
  Every file is checked; a mismatch is an error naming the file, and the data is not used. A stamp of the
  verified files' sizes and times spares later starts the decoding.
- The archive is unpacked only where its members fit the expected layout (no path from the archive is trusted),
  then deleted once its images are verified.
- Files put there by hand are used the same way: the archive as downloaded, or the folder it unpacks to.
- Only datasets whose images have a public download are registered. RSITMD, RSICD and Sydney-captions have
  public annotation files but no stable public image download known to us; they stay `FORMAT:PATH` specs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import cache_root, file_sha256, write_text
from .dataset import IMAGE_EXTS
from .download import Bar, FetchError, download, host
from .errors import DataError
from .labels import UCM_CLASSES, landuse_file, landuse_layout

MANIFESTS = Path(__file__).resolve().parent / "manifests"
log = logging.getLogger(__name__)


class VerifyError(DataError):
    """Files that differ from the manifest; `files` names them."""

    def __init__(self, message: str, files=()):
        super().__init__(message)
        self.files = list(files)


@dataclass(frozen=True)
class Remote:
    """One file to download: where it goes under the dataset folder, the URLs that serve it (in order), and the
    page a person downloads it from by hand."""
    name: str
    urls: tuple[str, ...]
    page: str = ""


@dataclass(frozen=True)
class Source:
    """A dataset by name: annotation files (checked by sha256), an image archive (checked by decoded pixels after
    unpacking), where both live under the dataset folder, and the format its annotations are read with."""
    name: str
    title: str
    annotations: tuple[Remote, ...]
    archive: Remote
    images: str                 # folder of the unpacked images, under the dataset folder
    captions: str               # folder of the annotation files, under the dataset folder
    fmt: str                    # rsdemo.data.formats format of the annotations
    manifest: Path
    gallery_split: str = "test"  # the split `--gallery NAME` shows: images no checkpoint was trained on
    citation: str = ""


_RSC = "xiaoyuan1996/RemoteSensingCaptions"
_RSC_COMMIT = "13982446a866d11ee61c0eeb55a121a84e58f5ef"   # the commit ../shared/data/SOURCES.md names


def _caption_file(split: str) -> Remote:
    path = f"data/UCM_Captions/data_{split}_UCM.json"
    return Remote(f"ucm_captions/data_{split}_UCM.json",
                  (f"https://raw.githubusercontent.com/{_RSC}/{_RSC_COMMIT}/{path}",
                   f"https://cdn.jsdelivr.net/gh/{_RSC}@{_RSC_COMMIT}/{path}",
                   f"https://github.com/{_RSC}/raw/{_RSC_COMMIT}/{path}"),
                  f"https://github.com/{_RSC}/tree/{_RSC_COMMIT}/data/UCM_Captions")


SOURCES: dict[str, Source] = {
    "ucm": Source(
        name="ucm",
        title="UC Merced Land Use + UCM-captions",
        annotations=tuple(_caption_file(s) for s in ("train", "val", "test")),
        archive=Remote("UCMerced_LandUse.zip",
                       ("http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip",
                        # redistributed unchanged (its card says so), served with Range support
                        "https://huggingface.co/datasets/torchgeo/ucmerced/resolve/main/UCMerced_LandUse.zip"),
                       "http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip"),
        images="UCMerced_LandUse/Images",
        captions="ucm_captions",
        fmt="ucm",
        manifest=MANIFESTS / "ucm.json",
        citation="Yang & Newsam, ACM GIS 2010 (images, public-domain USGS imagery); Qu et al., CITS 2016 (captions)",
    ),
}


def get(name) -> Source:
    if isinstance(name, Source):
        return name
    src = SOURCES.get(str(name).lower())
    if src is None:
        raise DataError(f"unknown dataset {name!r} (downloadable: {', '.join(SOURCES)})")
    return src


def dataset_dir(name) -> Path:
    return cache_root() / "datasets" / get(name).name


def load_manifest(src) -> dict:
    src = get(src)
    try:
        return json.loads(Path(src.manifest).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{src.manifest}: cannot read the {src.name} manifest ({e})") from e


# ---- images: decoded-pixel hashes -------------------------------------------------------------------------------

def pixel_sha256(path) -> tuple[str, tuple[int, int]]:
    """sha256 of the decoded image as an 8-bit RGB array (height x width x 3, row-major), and its (width, height).
    Any lossless copy (TIFF, PNG, lossless WebP) of the same picture has the same hash."""
    with Image.open(path) as im:
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return hashlib.sha256(rgb.tobytes()).hexdigest(), (int(rgb.shape[1]), int(rgb.shape[0]))


def image_ids(manifest: dict) -> dict[str, str]:
    """id -> path of the image under the Land Use `Images/` folder, from the manifest's class list."""
    return {key: landuse_file(key, manifest["classes"]) for key in manifest["images"]}


def verify_images(manifest: dict, found: dict[str, Path], progress=False) -> list[tuple[str, str]]:
    """(file, reason) for every image of `manifest` that is missing from `found` (id -> file) or whose decoded
    pixels or size differ; [] when all match."""
    want = manifest["images"]
    sizes = manifest.get("sizes", {})
    default = list(manifest.get("size", [256, 256]))
    names = image_ids(manifest)
    bad: list[tuple[str, str]] = []
    missing = [k for k in want if k not in found]
    if missing:
        bad += [(names[k], "missing") for k in missing]
    bar = Bar(progress, "verify images", unit="img")
    try:
        todo = [k for k in want if k in found]
        for n, k in enumerate(todo, 1):
            p = found[k]
            try:
                got, size = pixel_sha256(p)
            except Exception as e:  # noqa: BLE001 - a file that does not decode is one more mismatch, named
                bad.append((str(p), f"cannot decode ({type(e).__name__}: {e})"))
                continue
            if got != want[k]:
                bad.append((str(p), "decoded pixels differ from the manifest"))
            elif list(size) != sizes.get(k, default):
                bad.append((str(p), f"size {size[0]}x{size[1]} differs from the manifest"))
            bar(n, len(todo))
    finally:
        bar.close()
    return bad


def _stats(folder: Path) -> dict[str, list[int]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


def _manifest_key(src: Source) -> str:
    return file_sha256(src.manifest)


def _stamp(root: Path) -> Path:
    return root / "verified.json"


def _write_stamp(root: Path, data: dict) -> None:
    write_text(_stamp(root), json.dumps(data, indent=1, sort_keys=True) + "\n")


def _verified(src: Source, root: Path, images: Path) -> bool:
    """The images were verified earlier and no file has changed since (sizes and times)."""
    try:
        stamp = json.loads(_stamp(root).read_text())
    except (OSError, ValueError):
        return False
    return (stamp.get("manifest") == _manifest_key(src) and images.is_dir()
            and stamp.get("files") == _stats(images))


def _check_images(src: Source, man: dict, images: Path, progress) -> list[tuple[str, str]]:
    log.info("checking the %s images against %s (decoded pixels, once)", src.name, Path(src.manifest).name)
    lay = landuse_layout(images) or {}
    return verify_images(man, {k: p for k, (p, _) in lay.items()}, progress)


def _landuse_member(name: str):
    """(class, file) of an archive member `.../Images/<class>/<class>NN.ext` of a known class, else None."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if "__MACOSX" in parts or "Images" not in parts or len(parts) < 3:
        return None
    rest = parts[parts.index("Images") + 1:]
    if len(rest) != 2:
        return None
    c, f = rest
    if c not in UCM_CLASSES or not re.fullmatch(rf"{c}\d\d", Path(f).stem) or Path(f).suffix.lower() not in IMAGE_EXTS:
        return None
    return c, f


def _unpack(archive: Path, out: Path) -> int:
    """Unpacks the Land Use images of `archive` into `out/<class>/<file>`; returns how many."""
    n = 0
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                hit = None if info.is_dir() else _landuse_member(info.filename)
                if hit is None:
                    continue
                dest = out / hit[0] / hit[1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as fin, open(dest, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                n += 1
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"not a readable zip archive ({e})") from e
    return n


def _mismatch(src: Source, bad, where: str) -> VerifyError:
    shown = "; ".join(f"{f}: {r}" for f, r in bad[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    return VerifyError(f"{src.name}: {len(bad)} file(s) differ from the manifest, not used ({where}): "
                       f"{shown}{more}", [f for f, _ in bad])


def _by_hand(src: Source, root: Path, todo: list[Remote], failures) -> FetchError:
    """The one-line message when no mirror answered: what to fetch by hand and where to put it."""
    hosts = sorted({host(u) for u, _ in failures})
    reasons = sorted({r for _, r in failures if r != "host did not answer earlier"})
    groups: dict[tuple[str, str], list[str]] = {}
    for r in todo:
        folder = (root / r.name).parent
        groups.setdefault((str(folder), r.page or r.urls[0]), []).append(Path(r.name).name)
    steps = "; ".join(f"{', '.join(names)} from {page} into {folder}{os.sep}"
                      for (folder, page), names in groups.items())
    return FetchError(f"{src.name}: could not download {src.title} (no mirror delivered them: "
                      f"{', '.join(hosts)}: {' / '.join(reasons)[:200]}). Fetch by hand: {steps}; then run again "
                      f"(RSDEMO_CACHE moves the folder).", failures)


@contextlib.contextmanager
def _locked(root: Path):
    """One fetch per dataset folder at a time (a Space's workers, the page and a CLI run starting together); the
    next one then finds the files verified. Where fcntl is missing (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(name, progress=None, timeout: float | None = None, images: bool = True) -> Path:
    """The dataset folder with every file present and verified against the manifest (downloading what is
    missing); `images=False` fetches the annotation files only. Raises VerifyError naming files that differ,
    FetchError (one line: what to download by hand, and where) when no mirror answered."""
    src = get(name)
    root = dataset_dir(src)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        return _fetch(src, root, progress, timeout, images)


def _fetch(src: Source, root: Path, progress, timeout, images: bool) -> Path:
    man = load_manifest(src)
    dead: set[str] = set()
    failures: list[tuple[str, str]] = []
    todo: list[Remote] = []
    wrong: list[str] = []
    for r in src.annotations:
        dest = root / r.name
        want = man["files"][r.name]["sha256"]
        if dest.is_file():
            got = file_sha256(dest)
            if got != want:
                raise VerifyError(f"{dest}: sha256 {got[:12]}… differs from the manifest's {want[:12]}…, not used "
                                  f"(delete it to download it again)", [str(dest)])
            continue
        try:
            download(r.urls, dest, want, progress=progress, timeout=timeout, dead=dead)
        except FetchError as e:
            failures += e.failures
            todo.append(r)
            wrong += [f"{r.name} from {u}: {why}" for u, why in e.failures if why.startswith("sha256")]
    if images:
        got = _fetch_images(src, man, root, progress, timeout, dead)
        if got is not None:
            failures += got
            todo.append(src.archive)
    if wrong:
        raise VerifyError(f"{src.name}: downloaded file(s) differ from the manifest, not used: {'; '.join(wrong)}",
                          wrong)
    if todo:
        raise _by_hand(src, root, todo, failures)
    return root


def _fetch_images(src: Source, man: dict, root: Path, progress, timeout, dead):
    """Brings the verified images into place; returns the mirrors' failures when none answered, else None."""
    images = root / src.images
    if _verified(src, root, images):
        return None
    archive = root / src.archive.name
    if images.is_dir():  # unpacked earlier, or by hand: checked in place
        bad = _check_images(src, man, images, progress)
        if bad:
            raise _mismatch(src, bad, f"in {images}")
        _write_stamp(root, {"manifest": _manifest_key(src), "files": _stats(images)})
        archive.unlink(missing_ok=True)
        return None
    urls = list(src.archive.urls)
    first_bad = None   # the error of the first mirror whose archive did not match: reported if no other one does
    while True:
        used = None
        if not archive.is_file():  # else: put there by hand, or downloaded by a run that stopped before unpacking
            try:
                used = download(urls, archive, None, progress=progress, timeout=timeout, dead=dead)
            except FetchError as e:
                if first_bad is None:
                    return e.failures
                raise first_bad from None
            urls = urls[urls.index(used) + 1:]
        tmp = root / f".images.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _unpack(archive, tmp)
            bad = _check_images(src, man, tmp, progress)
        except DataError as e:
            bad = None
            err = VerifyError(f"{archive}: {e}" + (f" (downloaded from {used})" if used else
                                                   "; delete it to download it again"), [str(archive)])
        if bad == []:
            images.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, images)
            _write_stamp(root, {"manifest": _manifest_key(src), "files": _stats(images)})
            archive.unlink(missing_ok=True)
            return None
        shutil.rmtree(tmp, ignore_errors=True)
        if bad:
            bad = [(src.images + f[len(str(tmp)):] if f.startswith(str(tmp)) else f, r) for f, r in bad]
            err = _mismatch(src, bad, f"archive from {used}" if used else
                            f"archive {archive}; delete it to download it again")
        if used is None:
            raise err
        archive.unlink(missing_ok=True)  # this mirror's copy is bad (and reported): try the next one
        first_bad = first_bad or err
        if not urls:
            raise first_bad


# ---- what the rest of the package calls --------------------------------------------------------------------------

def is_name(spec) -> bool:
    """`spec` names a downloadable dataset ('ucm', or 'ucm:SPLIT' for a gallery) and is not a path that exists."""
    if not isinstance(spec, str) or os.path.exists(spec):
        return False
    return spec.partition(":")[0].lower() in SOURCES


def fetched(name: str, images=None, progress=None) -> tuple[Path, str, Path]:
    """(annotation file, its format, image folder) of a downloadable dataset, fetched and verified first;
    rsdemo.data.formats.open_dataset loads them. `images`: use that folder instead of the downloaded images
    (only the annotation files are then fetched)."""
    src = get(name)
    root = fetch(src, progress=progress, images=images is None)
    return root / src.captions, src.fmt, Path(images) if images is not None else root / src.images


def resolve_gallery(spec, data=None, split=None, progress=None):
    """(images folder, data spec, split) for the page's gallery. A dataset name ('ucm', 'ucm:val', 'ucm:all')
    is fetched and verified (tqdm bars, or `progress(done, total, what)`), and its own annotations and its
    gallery split (default: images no checkpoint was trained on) are filled in where not given; anything else
    comes back unchanged."""
    if not is_name(spec):
        return spec, data, split
    name, _, want = spec.partition(":")
    src = get(name)
    root = fetch(src, progress=progress)
    split = split or want or src.gallery_split
    return str(root / src.images), data or src.name, None if split == "all" else split
