"""Training losses for image-text retrieval.

Every loss takes a score matrix `s` [B, B] with s[i, j] = score(image i, caption j) for a batch of B matched pairs,
so the positives are on the diagonal. Losses are means over the batch unless said otherwise, so their size does not
grow with B and a learning rate tuned at one batch size carries over to another.

`mask` [B, B] bool, where accepted, marks pairs that must not be used as negatives (another image's identical
caption, the same image twice in a batch: see `duplicate_mask`). Remote-sensing caption sets repeat themselves a lot,
and pushing such pairs apart teaches the model to separate things that are the same.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F

from rsdemo.data.dataset import normalise_caption
from rsdemo.data.text import tokenize

STOPWORDS = frozenset("a an the of in on is are there with and to at".split())


def _square(s: torch.Tensor) -> int:
    if s.dim() != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"score matrix must be [B, B], got {tuple(s.shape)}")
    return s.shape[0]


def _skip(s: torch.Tensor, mask) -> torch.Tensor:
    """Pairs that are not negatives: the diagonal plus whatever `mask` marks."""
    b = s.shape[0]
    skip = torch.eye(b, dtype=torch.bool, device=s.device)
    if mask is not None:
        if mask.shape != s.shape:
            raise ValueError(f"mask must be {tuple(s.shape)}, got {tuple(mask.shape)}")
        skip = skip | mask.to(device=s.device, dtype=torch.bool)
    return skip


def triplet(s: torch.Tensor, margin=0.2, hardest: bool = False, mask=None, reduction: str = "mean") -> torch.Tensor:
    """Bidirectional hinge ranking loss.

    Image -> text, anchor image i, negative caption j != i:  [margin - s[i, i] + s[i, j]]_+
    Text -> image, anchor caption j, negative image i != j:  [margin - s[j, j] + s[i, j]]_+

    hardest=False sums the hinge over all negatives of an anchor (VSE0, AMFMN's released code); hardest=True keeps
    only the largest one (VSE++). Each anchor's cost is added over both directions.
    margin: a float, or a [B, B] tensor giving the margin of pair (image i, caption j), used in both directions
    (see `dynamic_margin`).
    mask: [B, B] bool, True = never a negative (excluded from both directions).
    reduction: "mean" divides the total by B (the default, independent of batch size); "sum" returns the total,
    which reproduces AMFMN's released code (sum over negatives per anchor, then over the batch). sum == mean * B.
    """
    b = _square(s)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if torch.is_tensor(margin):
        margin = margin.to(device=s.device, dtype=s.dtype)
    skip = _skip(s, mask)
    pos = s.diagonal()
    # Masked hinges become 0, which is also the floor of a hinge, so max and sum both ignore them.
    i2t = (margin + s - pos.view(b, 1)).clamp(min=0).masked_fill(skip, 0)
    t2i = (margin + s - pos.view(1, b)).clamp(min=0).masked_fill(skip, 0)
    if hardest:
        total = i2t.max(dim=1).values.sum() + t2i.max(dim=0).values.sum()
    else:
        total = i2t.sum() + t2i.sum()
    return total if reduction == "sum" else total / b


def _bags(texts: list[str]) -> list[Counter]:
    # Words only: punctuation and stopwords say nothing about what is in the image.
    return [Counter(t for t in tokenize(x) if t not in STOPWORDS and t[0].isalnum()) for x in texts]


def prior_similarity(texts: list[str], labels=None, weight: float = 0.5) -> torch.Tensor:
    """How alike two samples of a batch are before any learning: [B, B] float32 in [0, 1], symmetric, diagonal 1.

    Text part: cosine similarity of idf-weighted bags of words of the captions (rsdemo.data.text.tokenize, with
    punctuation and a small stopword list dropped). idf is computed within the batch with smoothing,
    idf(w) = ln((1 + B) / (1 + df(w))) + 1, so a word shared by every caption still counts a little (weight 1) and
    rarer shared words count more. A caption with no content words is similar to nothing but itself.
    Label part (when `labels`, a list of scene labels, is given): 1 where both labels are equal and not None, else 0.
    prior = (1 - weight) * text + weight * label.
    """
    b = len(texts)
    bags = _bags(texts)
    df = Counter(w for bag in bags for w in bag)
    vocab = {w: k for k, w in enumerate(sorted(df))}
    vec = torch.zeros(b, len(vocab), dtype=torch.float64)
    for i, bag in enumerate(bags):
        for w, n in bag.items():
            vec[i, vocab[w]] = n * (math.log((1 + b) / (1 + df[w])) + 1)
    vec = F.normalize(vec, dim=1)  # all-zero rows stay zero
    prior = (vec @ vec.T).clamp(0, 1)
    if labels is not None:
        if len(labels) != b:
            raise ValueError(f"{len(labels)} labels for {b} texts")
        agree = torch.tensor([[float(x is not None and x == y) for y in labels] for x in labels], dtype=torch.float64)
        prior = (1 - weight) * prior + weight * agree
    prior.fill_diagonal_(1.0)
    return prior.float()


def dynamic_margin(prior: torch.Tensor, base: float = 0.2, low: float = 0.05) -> torch.Tensor:
    """Per-pair triplet margin that shrinks as two samples are more alike (the AMFMN paper's dynamic margin).

    margin = base - (base - low) * prior, so prior 0 -> base and prior 1 -> low.
    Remote-sensing batches are full of near-duplicates (same scene type, near-identical captions). A fixed margin
    pushes such a pair as far apart as two unrelated ones, i.e. it trains on false negatives; a smaller margin for
    similar pairs still ranks the true match first but asks for less separation where little is warranted.
    """
    return base - (base - low) * prior.clamp(0, 1)


def infonce(s: torch.Tensor, temperature=None, logit_scale=None, mask=None) -> torch.Tensor:
    """Symmetric cross-entropy over the batch (CLIP), mean of image -> text and text -> image.

    logits = s * scale, scale = logit_scale.exp() for a learnable log-scale tensor, else 1 / temperature
    (default temperature 0.07). Targets are the diagonal. Each direction is a mean over the B anchors.
    mask: True pairs get logit -inf so they are not negatives; the diagonal is never masked.
    """
    b = _square(s)
    if temperature is not None and logit_scale is not None:
        raise ValueError("give temperature or logit_scale, not both")
    scale = logit_scale.exp() if logit_scale is not None else 1.0 / (0.07 if temperature is None else temperature)
    logits = s * scale
    if mask is not None:
        off = _skip(s, mask) & ~torch.eye(b, dtype=torch.bool, device=s.device)
        logits = logits.masked_fill(off, float("-inf"))
    target = torch.arange(b, device=s.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def duplicate_mask(texts: list[str], image_ids=None) -> torch.Tensor:
    """[B, B] bool, True where i != j and the captions are equal after normalise_caption, or the image ids are equal.

    Pass it as `mask` so such pairs are not treated as negatives.
    """
    keys = [normalise_caption(t) for t in texts]
    b = len(keys)
    same = [[keys[i] == keys[j] for j in range(b)] for i in range(b)]
    if image_ids is not None:
        if len(image_ids) != b:
            raise ValueError(f"{len(image_ids)} image ids for {b} texts")
        same = [[same[i][j] or image_ids[i] == image_ids[j] for j in range(b)] for i in range(b)]
    out = torch.tensor(same, dtype=torch.bool).reshape(b, b)
    out.fill_diagonal_(False)
    return out


def class_contrastive(v: torch.Tensor, t: torch.Tensor, classes: torch.Tensor, temperature: float = 0.1):
    """Cross-modal class contrast (CCNet's Cross-modality Distinction loss, as we read it).

    v, t: L2-normalised image and text embeddings [B, d]; classes [B]: a class id per pair (scene labels where the
    data has them, else the image id, so only a pair's own image and text count as one class). For every image the
    texts of its class are positives and all other texts negatives, and vice versa: the log of the probability mass
    on the own class is maximised, which pulls a class's images and texts together (intra-class compactness) and
    pushes other classes away (inter-class separation) across the two modalities.
    """
    logits = v @ t.T / temperature
    same = classes[:, None] == classes[None, :]

    def one_way(lg):
        pos = lg.masked_fill(~same, float("-inf")).logsumexp(1)
        return (lg.logsumexp(1) - pos).mean()

    return 0.5 * (one_way(logits) + one_way(logits.T))


def semantic_margin(labels, base: float = 0.2, low: float = 0.05) -> torch.Tensor:
    """SSJDN's Semantic-guided Triple Loss margin, as we read it: an adaptive constant from label agreement.

    For a negative pair with the same scene label the margin shrinks by a constant k that the batch itself sets:
    k = the share of negatives in the batch that share their anchor's label (the more same-label negatives, the
    more of them are near-duplicates in RS data, so the less they are pushed away): margin = base - (base-low)*k.
    Pairs with different labels keep `base`. Unknown labels (None) never agree. Returns [B, B].
    """
    B = len(labels)
    agree = torch.tensor([[labels[i] is not None and labels[i] == labels[j] for j in range(B)] for i in range(B)],
                         dtype=torch.float32)
    off = 1 - torch.eye(B)
    k = float((agree * off).sum() / off.sum().clamp(min=1))
    return base - (base - low) * k * agree


def tile_loss(maps: torch.Tensor, targets: torch.Tensor, scale: float = 20.0, tiles: int = 2) -> torch.Tensor:
    """The grounding objective on mosaics: maps [N, h, w] split pair i's score over the positions of a tiles x tiles
    mosaic (score_maps); logits = scale x each tile's sum (a cell belongs to the tile holding its centre);
    cross-entropy against the tile the caption describes (targets [N], row-major)."""
    def member(n: int) -> torch.Tensor:
        a = torch.zeros(tiles, n, dtype=maps.dtype, device=maps.device)
        a[((torch.arange(n) + 0.5) * tiles / n).long().clamp(max=tiles - 1), torch.arange(n)] = 1.0
        return a

    sums = torch.einsum("ah,nhw,bw->nab", member(maps.shape[-2]), maps, member(maps.shape[-1])).flatten(1)
    return F.cross_entropy(scale * sums, targets.to(maps.device))


def word_contrast(sim: torch.Tensor, mask: torch.Tensor, scale: float = 20.0, dup=None) -> torch.Tensor:
    """Token-level contrast (late interaction, as FILIP scores pairs): sim [N, M, T, R] is the cosine of text m's
    word t with image n's region r (word_regions), mask [M, T] its real words. The pair's score is the mean over
    the words of each word's best region; symmetric InfoNCE over the batch at logit scale `scale` (dup: pairs
    that are not negatives, duplicate_mask). A word can only raise its own image above the others by matching a
    region the others lack, so the words learn where their objects are."""
    m = mask[None].to(sim.dtype)
    s = (sim.amax(-1) * m).sum(-1) / m.sum(-1).clamp(min=1)
    return infonce(s, temperature=1.0 / scale, mask=dup)
