"""The one place that writes, finds, lists and loads checkpoints: NAME.safetensors (weights + the config/vocab needed
to rebuild the model, in the file's metadata) beside NAME.json (the model card). Writes are atomic: temp file, fsync,
rename. Loading never unpickles: safetensors only.

Where checkpoints are found (checkpoint_dirs): the folders in RSDEMO_CHECKPOINTS when set, else the committed ones
(CHECKPOINT_DIR); plus, when RSDEMO_HF_REPO names a Hugging Face model repo, its files downloaded once. A name
("amfmn-slim", "ucm/amfmn-lite0") is NAME.safetensors in the first of those folders that has it.
catalogue() lists them with their cards; rank() is the one rule for "the best checkpoint for this imagery" (models
trained on that kind of imagery first; test mR from their cards, where a lead under MR_TIE is settled by how well
the model's own maps point on that imagery, rsdemo/results): default_model() (CLI, README, bench) and the page's
model menu both use it.

A model with frozen pretrained encoders (model.rebuilt_at_load(): e.g. ImageNet Lite0, MiniLM) is stored without
them: only the trained heads go in the file, its metadata lists the left-out prefixes, and load() rebuilds those
encoders from their pip-installed weights (the config keeps naming them), so the file stays a few MB.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import results
from .data.formats import domain
from .data.text import Vocab
from .files import atomic_write, write_text
from .models.factory import build
from .models.registry import config_files, list_models

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"   # the committed ones, shipped as package data


def _rebuilt(model) -> list[str]:
    return list(model.rebuilt_at_load())


def _state(model, half: bool) -> dict[str, torch.Tensor]:
    out = {}
    skip = tuple(_rebuilt(model))
    for k, v in model.state_dict().items():
        if skip and k.startswith(skip):
            continue
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous()
    return out


def save(model, path, card: dict | None = None, half: bool = False, extra: dict | None = None) -> Path:
    """Writes path (.safetensors) and its card (.json). `extra` tensors (optimizer state etc.) are not stored here."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    meta = {"rsdemo": json.dumps({"name": model.name, "config": model.config.as_dict(),
                                  "vocab": model.vocab.itos if model.vocab is not None else None,
                                  "rebuilt": _rebuilt(model)})}
    state = _state(model, half)
    # safetensors refuses tensors that share memory (tied weights): store a copy of each
    seen = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            state[k] = v.clone()
        seen[ptr] = k
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    if card is not None:
        write_card(path, card)
    return path


def write_card(path, card: dict) -> None:
    text = json.dumps(card, indent=1, default=str) + "\n"
    write_text(Path(path).with_suffix(".json"), text)


def read_meta(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "rsdemo" not in meta:
        raise ValueError(f"{path}: not an rsdemo checkpoint (no 'rsdemo' metadata)")
    return json.loads(meta["rsdemo"])


def _mismatch(e: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
    more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
    return (lines[0].rstrip(".") + more) if lines else str(e).splitlines()[0]


def load(path, device: str | None = None):
    """Rebuilds the model from the checkpoint's own config and vocab, loads the weights (strict), eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        meta = read_meta(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable checkpoint ({e})") from None
    vocab = Vocab(meta["vocab"][2:]) if meta.get("vocab") else None
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: not an rsdemo checkpoint (its metadata has no model config)")
    cfg = dict(meta["config"])
    rebuilt = tuple(meta.get("rebuilt") or ())
    if not rebuilt:
        cfg.pop("pretrained", None)  # the weights are all in this file; don't fetch the backbone's again
    try:
        model = build(cfg, meta.get("name"), vocab=vocab)
    except RuntimeError as e:  # a left-out pretrained encoder whose weights are not installed
        raise ValueError(f"{path}: cannot rebuild its frozen encoders {list(rebuilt)}: {e}") from None
    except ValueError as e:  # its config names options its architecture does not have (another model's file)
        raise ValueError(f"{path}: checkpoint does not fit model {meta.get('name')!r} ({e})") from None
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ: weights of another size (embed_dim, vocabulary, ...)
        raise ValueError(f"{path}: checkpoint does not fit model {meta.get('name')!r} ({_mismatch(e)})") from None
    missing = [k for k in missing if not (rebuilt and k.startswith(rebuilt))]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit model {meta.get('name')!r} "
                         f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    model.checkpoint = str(path)
    card = path.with_suffix(".json")
    model.card = json.loads(card.read_text()) if card.is_file() else {}
    return model.to(device or "cpu").eval()


# ---- finding and listing ------------------------------------------------------------------------------------

def checkpoint_dirs() -> list[Path]:
    """Where checkpoints are looked for, in order: RSDEMO_CHECKPOINTS (folders joined by os.pathsep) or else the
    committed checkpoints; then, when RSDEMO_HF_REPO names a Hugging Face model repo, its files downloaded once with
    huggingface_hub (a Space can keep its weights outside the code repo)."""
    env = os.environ.get("RSDEMO_CHECKPOINTS")
    dirs = [Path(p) for p in env.split(os.pathsep) if p] if env else [CHECKPOINT_DIR]
    repo = os.environ.get("RSDEMO_HF_REPO")
    if repo:
        from huggingface_hub import snapshot_download  # optional dependency, only when a hub repo is named
        dirs.append(Path(snapshot_download(repo, allow_patterns=["*.safetensors", "*.json"])))
    return dirs


def find_checkpoint(name: str, dirs=None) -> Path | None:
    """NAME.safetensors in the first checkpoint folder that has it (NAME may name a subfolder: "ucm/amfmn-lite0")."""
    for d in dirs if dirs is not None else checkpoint_dirs():
        p = Path(d) / f"{name}.safetensors"
        if p.is_file():
            return p
    return None


def load_model(name_or_checkpoint: str | os.PathLike, device: str | None = None):
    """A trained model: a checkpoint path (.safetensors), or a name with a checkpoint in checkpoint_dirs().

    A registered name without a checkpoint is refused: an untrained network would silently give noise.
    """
    if not str(name_or_checkpoint).strip():
        raise ValueError(f"no model given: name a checkpoint file or one of {', '.join(list_models())}")
    p = Path(name_or_checkpoint)
    if p.suffix == ".safetensors" or p.exists():
        return load(p, device=device)
    dirs = checkpoint_dirs()
    ck = find_checkpoint(str(name_or_checkpoint), dirs)
    if ck is not None:
        return load(ck, device=device)
    where = ", ".join(str(d) for d in dirs)
    if str(name_or_checkpoint) in config_files():
        raise ValueError(f"model {name_or_checkpoint!r} has no trained checkpoint in {where}; "
                         f"train one with `rsdemo train --model {name_or_checkpoint}` or use create_model()")
    raise ValueError(f"{name_or_checkpoint!r} is neither a checkpoint file nor a registered model "
                     f"({', '.join(list_models())})")


# Test mR this close to the best counts as a tie on retrieval: about the seed-to-seed spread of one recipe (the
# UCM recipes' sd over 3 seeds is 0.4-1.5 mR, rsdemo/results/ucm.json), so such a lead is not a measured one.
MR_TIE = 1.0


def rank(rows: list[dict], prefer: str | None = None, grounding: dict[str, float] | None = None) -> list[dict]:
    """The one rule for "the best checkpoint for this imagery", by measured retrieval AND grounding: models
    trained on the `prefer` kind of imagery (a domain() word) first; among those, the ones within MR_TIE of the
    best test mR (their cards: the numbers docs/RESULTS.md is written from) are tied on retrieval and go by how
    often their own maps point at the thing named on that imagery (`grounding`, default
    results.best_own_pointing(prefer): real photos, or synthetic scenes for synthetic; a model not measured
    comes after the measured ones); then every other model by test mR, then by name. So the default model is the
    measured best, never picked by hand. Without `prefer`: test mR, then name."""
    def mr(r):
        return r["mr"] or 0.0

    mine = [mr(r) for r in rows if prefer is not None and domain(r["data"]) == prefer]
    top = max(mine) if mine else None
    if grounding is None:
        grounding = results.best_own_pointing(prefer) if top is not None else {}

    def key(r):
        other = prefer is not None and domain(r["data"]) != prefer
        tied = not other and top is not None and mr(r) >= top - MR_TIE
        return (other, not tied, -grounding.get(r["name"], -1.0) if tied else 0.0, -mr(r), r["name"])
    return sorted(rows, key=key)


def catalogue(dirs=None, prefer: str | None = None) -> list[dict]:
    """Every checkpoint with its card: name, description, test mR, data, card, checkpoint path; ranked by rank()."""
    found = {}
    for d in dirs if dirs is not None else checkpoint_dirs():
        for card_file in sorted(Path(d).rglob("*.json")):  # subfolders too: checkpoints/ucm/NAME, ...
            ck = card_file.with_suffix(".safetensors")
            name = card_file.relative_to(d).with_suffix("").as_posix()
            if not ck.is_file() or name in found:
                continue
            try:
                card = json.loads(card_file.read_text())
            except (OSError, ValueError):
                continue  # not a model card (or a broken one): not offered
            if not isinstance(card, dict):
                continue
            test = (card.get("metrics") or {}).get("test") or {}
            found[name] = {"name": name, "description": card.get("description", ""), "mr": test.get("mr"),
                           "data": card.get("data", ""), "card": card, "checkpoint": str(ck)}
    return rank(list(found.values()), prefer)


def default_model(data: str = "synthetic", dirs=None) -> str:
    """The best checkpoint trained on `data`'s kind of imagery by rank(): what the CLI, README and bench name as
    the default, and what the page opens with on such a gallery."""
    want = domain(data)
    for row in catalogue(dirs, prefer=want):
        if domain(row["data"]) == want and row["mr"] is not None:
            return row["name"]
    where = ", ".join(str(d) for d in (dirs if dirs is not None else checkpoint_dirs()))
    raise ValueError(f"no checkpoint in {where} has test metrics on {want!r} imagery")
