"""Model maps -> heatmaps: the one place the app, the CLI and the faithfulness metrics turn explanations into maps.

A model's `explain` gives maps at feature resolution (rsdemo.models.base.Explanation). Here they are upsampled and
normalised (`to_heatmap`), split per word (`word_maps`; `words` joins WordPieces into the words a reader sees and
marks FUNCTION_WORDS, `word_map` is one word's part of a map built word by word), given as the CCNet word x region
matrix (`cooccurrence`), and compared with two baselines that work for any model (`region_similarity`, `gradcam`),
so a model's own map can be judged against what it would show anyway; `image_similarity` explains an image->image
match the same way. Everything here is data; colouring it (overlays, charts) and naming it is rsdemo.ui's job.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Maps that stack K learned slots (DOVE's ROAM), not words: never per-word, even when K equals the token count.
SLOTS = {"roam"}

def _hw(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def to_heatmap(m: np.ndarray, size) -> np.ndarray:
    """A feature-resolution map [h, w] -> [H, W] float in [0, 1]: bilinear upsampling, then min-max.

    size: H (square) or (H, W) -- note (H, W), not PIL's (W, H). A constant map carries no location: zeros."""
    a = torch.as_tensor(np.nan_to_num(np.asarray(m, dtype=np.float32)))
    if a.dim() != 2:
        raise ValueError(f"to_heatmap expects one [h, w] map, got shape {tuple(a.shape)}")
    up = F.interpolate(a[None, None], size=_hw(size), mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


# ---- per-word maps ---------------------------------------------------------------------------------------
def _grid(ex, n: int) -> tuple[int, int] | None:
    """The region grid (h, w) of an explanation with n regions: a 2-D map of that size, else a square."""
    for m in ex.maps.values():
        if m.ndim == 2 and m.size == n:
            return m.shape
    r = int(round(n ** 0.5))
    return (r, r) if r * r == n else None


def word_sources(ex) -> list[str]:
    """Names of the explanation's per-word map stacks ([T, h, w] maps, then "cfm" where the model has one)."""
    T = len(ex.tokens)
    out = [k for k, m in ex.maps.items() if m.ndim == 3 and k not in SLOTS and m.shape[0] == T]
    if ex.cfm is not None and _grid(ex, ex.cfm.shape[1]) is not None:
        out.append("cfm")
    return out


def _stack(ex, source: str) -> np.ndarray:
    if source == "cfm":
        return ex.cfm.reshape(ex.cfm.shape[0], *_grid(ex, ex.cfm.shape[1]))
    return ex.maps[source]


def word_maps(ex, source: str | None = None) -> dict[str, np.ndarray]:
    """token -> [h, w] from one per-word source (default: the first of `word_sources`); {} when there is none.

    A repeated token is keyed "token@i" (i its position) so no word's map is lost."""
    sources = word_sources(ex)
    if source is None:
        if not sources:
            return {}
        source = sources[0]
    elif source not in sources:
        raise ValueError(f"no per-word maps {source!r} in this explanation (has: {', '.join(sources) or 'none'})")
    out = {}
    for i, (tok, m) in enumerate(zip(ex.tokens, _stack(ex, source))):
        out[tok if tok not in out else f"{tok}@{i}"] = m
    return out


# Words that name nothing one could point at in an image (articles, pronouns, auxiliaries, conjunctions,
# prepositions): left out of the page's word menu and drawn apart in the co-occurrence view, where otherwise
# "the" can carry the largest share. Spatial prepositions ("near", "beside") are here too: they relate things.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every its it it's they them their there here what which who whose
is are was were be been being am has have had do does did can could will would may might shall should must
and or but nor so yet if than then as of in on at to from by with without into onto upon off out up down over
under above below near nearby next beside besides between among around along across behind before after through
within towards toward against about like while also very too not no
""".split())


SENTENCE = "whole sentence"   # a word menu's entry for the whole text (no word): rsdemo.demo, rsdemo.ui


def words(tokens: list[str]) -> list[dict]:
    """The text's words as its maps know them: WordPieces ("##" continues the previous piece) joined into one
    word. Each: {"key" (the word, or "word@i" for a repeat, i its word position), "word", "tokens" (its token
    positions), "function" (a FUNCTION_WORDS entry or punctuation)}."""
    out, seen = [], set()
    for i, tok in enumerate(tokens):
        if tok.startswith("##") and out:
            out[-1]["word"] += tok[2:]
            out[-1]["tokens"].append(i)
            continue
        out.append({"word": tok, "tokens": [i]})
    for n, w in enumerate(out):
        w["key"] = w["word"] if w["word"] not in seen else f"{w['word']}@{n}"
        seen.add(w["word"])
        w["function"] = w["word"].lower() in FUNCTION_WORDS or not any(c.isalnum() for c in w["word"])
    return out


def find_word(tokens: list[str], key: str) -> dict:
    """The word `key` of words(tokens) (its key, or a plain word: its first occurrence); ValueError if absent."""
    ws = words(tokens)
    for w in ws:
        if w["key"] == key:
            return w
    for w in ws:
        if w["word"] == key:
            return w
    raise ValueError(f"no word {key!r} in this text (words: {', '.join(w['key'] for w in ws)})")


# An own map built from a per-word stack: the stack it came from (own_maps averages [T, h, w] stacks under their
# own name; CCNet's region map is the co-occurrence matrix summed over words).
_STACK_OF = {"cfm_regions": "cfm"}


def word_stack(ex, map_name: str) -> np.ndarray | None:
    """[T, h, w]: the per-word maps behind one of the explanation's maps, or None when that map is not built from
    the words one by one (its per-word version is then the map of the word alone, which the caller computes)."""
    source = _STACK_OF.get(map_name, map_name)
    return _stack(ex, source) if source in word_sources(ex) else None


def word_map(ex, map_name: str, key: str) -> np.ndarray | None:
    """One word's share of `map_name` ([h, w]): its rows of the map's per-word stack (the mean over its WordPieces;
    the sum for the co-occurrence matrix, a probability mass); None when the map has no per-word stack."""
    st = word_stack(ex, map_name)
    if st is None:
        return None
    rows = [i for i in find_word(list(ex.tokens), key)["tokens"] if i < st.shape[0]]
    if not rows:
        return None
    part = st[rows]
    return part.sum(0) if _STACK_OF.get(map_name) == "cfm" else part.mean(0)


def _span(span) -> tuple[int, int]:
    return (span.start, span.end) if hasattr(span, "start") else (int(span[0]), int(span[1]))


def _word_tokens(tokens: list[str], a: int, b: int) -> tuple[int, int]:
    """Word span [a, b) -> token span, where tokens are WordPieces ("##" continues the previous word, as MiniLM's
    tokenizer gives); word tokens map to themselves."""
    starts = [i for i, t in enumerate(tokens) if not t.startswith("##")]
    if len(starts) == len(tokens) or a >= len(starts):
        return a, b
    # a span past the last (kept) word stays out of range, so phrase_maps skips it as before
    return starts[a], (starts[b] if b < len(starts) else len(tokens) + (b > len(starts)))


def phrase_maps(ex, span) -> dict[str, np.ndarray]:
    """"<source>_phrase" -> the mean of the span's words' maps, for every per-word source covering the span
    (a word split into WordPieces contributes all its pieces)."""
    a, b = _word_tokens(list(ex.tokens), *_span(span))
    out = {}
    for s in word_sources(ex):
        st = _stack(ex, s)
        if 0 <= a < b <= st.shape[0]:  # a span past the model's max_words has no maps
            out[f"{s}_phrase"] = st[a:b].mean(0)
    return out


def phrase_map(model, image, text: str, span, source: str | None = None, ex=None) -> np.ndarray | None:
    """The phrase's map (token span start:end) where the model gives per-word maps, else None."""
    ex = ex if ex is not None else model.explain(image, text)
    maps = phrase_maps(ex, span)
    if source is not None:
        return maps.get(f"{source}_phrase")
    return next(iter(maps.values()), None)


# ---- the word x region matrix ----------------------------------------------------------------------------
def cooccurrence(ex) -> dict | None:
    """ex.cfm [T, h*w] as data for a word x region chart: the matrix, its row words, its region labels ("(row,col)"
    where the regions form a grid, else "rN"), the grid and the score; None when the model has no cfm."""
    if ex.cfm is None:
        return None
    cfm = np.asarray(ex.cfm)
    T, R = cfm.shape
    grid = _grid(ex, R)
    if grid is not None and grid[0] * grid[1] == R:
        regions = [f"({i // grid[1]},{i % grid[1]})" for i in range(R)]
    else:
        grid, regions = None, [f"r{i}" for i in range(R)]
    return {"matrix": cfm, "tokens": list(ex.tokens[:T]), "regions": regions, "grid": grid,
            "score": float(ex.score)}


# ---- baselines for any model -----------------------------------------------------------------------------
def _batch(model, image) -> torch.Tensor:
    if torch.is_tensor(image):
        x = image.to(model.device)
        return x.unsqueeze(0) if x.dim() == 3 else x[:1]
    return model.preprocess(image)[:1]


@torch.no_grad()
def region_similarity(model, image, text: str) -> np.ndarray | None:
    """Cosine of the text embedding with each image position projected into the joint space: [h, w].

    The positions come from the model's position_embeddings hook (seed models: global_fc on each stride-32
    position, whose mean is the global embedding; CLIP: each patch through the tower's pooling projection).
    None where the model has none."""
    pos = model.position_embeddings(_batch(model, image))
    if pos is None:
        return None
    t = model.encode_text([text])[0]
    return F.cosine_similarity(pos[0].float(), t.float()[None, None], dim=-1).cpu().numpy()


IMAGE_MAP = "image_similarity"   # the name an image->image result's map goes by (rsdemo.demo, rsdemo.ui)


@torch.no_grad()
def image_similarity(model, image, query) -> np.ndarray | None:
    """Cosine of a query image's embedding with each position of `image` projected into the joint space: [h, w].

    How an image->image result is explained: which parts of the result look like the query image to this model
    (the search ranks by the cosine of the two global embeddings, whose image side these positions decompose
    for the seed models). query: a PIL image, or its embedding [d]. None where the model has no
    position_embeddings hook."""
    pos = model.position_embeddings(_batch(model, image))
    if pos is None:
        return None
    q = torch.as_tensor(query) if not hasattr(query, "convert") else model.encode_image(_batch(model, query))[0]
    q = q.to(pos.device).float().reshape(-1)
    return F.cosine_similarity(pos[0].float(), q[None, None], dim=-1).cpu().numpy()


def gradcam(model, image, text: str) -> np.ndarray | None:
    """Grad-CAM of model.score(image, [text]) on the last feature map: ReLU(sum_c w_c A_c), w_c = mean dS/dA_c.

    Where the activation is read is the model's cam_target hook (seed models: the backbone's stride-32 map; CLIP
    ViT: the patch tokens entering the last block, on the patch grid; CLIP RN: layer4). None without one."""
    target = model.cam_target()
    if target is None:
        return None
    module, pre, pick, to_map = target
    seen = []
    hook = (module.register_forward_pre_hook(lambda _m, args: seen.append(pick(args))) if pre else
            module.register_forward_hook(lambda _m, _i, out: seen.append(pick(out))))
    try:
        with torch.enable_grad():
            x = _batch(model, image).detach().requires_grad_(True)   # a graph even if every weight is frozen
            s = model.score(x, [text])[0, 0]
            grads = torch.autograd.grad(s, seen, allow_unused=True) if seen else ()
    finally:
        hook.remove()
    if not seen:
        return None
    a = to_map(seen[0].detach())[0]                                       # [C, h, w]
    # a model may run the tower more than once per score: the activation is the same, the gradients add up
    gs = [to_map(g)[0] for g in grads if g is not None]
    if not gs:
        return np.zeros(tuple(a.shape[-2:]), np.float32)
    w = sum(gs).mean((1, 2))                                              # [C]
    return F.relu((w[:, None, None] * a).sum(0)).float().cpu().numpy()


# ---- all maps of one (image, text) -----------------------------------------------------------------------
def own_maps(ex) -> dict[str, np.ndarray]:
    """The model's maps, one [h, w] each: 2-D kept, per-word stacks averaged over words, slot stacks skipped."""
    out = {}
    for k, m in ex.maps.items():
        m = np.asarray(m, dtype=np.float32)
        if m.ndim == 2:
            out[k] = m
        elif m.ndim == 3 and k not in SLOTS and m.shape[0] == len(ex.tokens):
            out[k] = m.mean(0)
    return out


def explain_all(model, image, text: str, ex=None) -> dict[str, np.ndarray]:
    """Own maps (see own_maps) plus "baseline_region_sim" and "baseline_gradcam", each [h, w] float.

    ex: the model's explanation of (image, text) when the caller already has it."""
    ex = ex if ex is not None else model.explain(image, text)
    out = own_maps(ex)
    for name, m in (("baseline_region_sim", region_similarity(model, image, text)),
                    ("baseline_gradcam", gradcam(model, image, text))):
        if m is not None:
            out[name] = m
    return out
