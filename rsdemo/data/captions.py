"""The caption grammar of the synthetic world: five true captions per rendered image, as chunks that keep which
instance ids each noun phrase refers to (the token spans the heatmap metrics score), and the grammar's vocabulary.

Captions are written from what was rendered (realised groups: counts that fit, positions read off the pixels), so
everything they state is true of the image. The first three of an image's captions state every attribute.
"""
from __future__ import annotations

import functools

from .dataset import Span
from .text import Vocab, tokenize
from .world import _POSITION_PHRASES, KINDS, NUMBERS, SCENES, STRUCTURE_NOUNS, Group, position_name


def _count_words(n: int, rng) -> str:
    if n == 1:
        return str(rng.choice(["a", "one"]))
    if n == 2 and rng.random() < 0.3:
        return "a pair of"
    return NUMBERS[n] if n < len(NUMBERS) else "many"


def _np(g: Group, rng, with_count=True, with_colour=True, with_size=False) -> str:
    """Noun phrase for a group: '[count] [size] [colour] noun'."""
    k = KINDS[g.kind]
    words = []
    if with_count:
        words.append(_count_words(g.count, rng))
    elif g.count > 1:
        words.append(str(rng.choice(["some", "several"])) if g.count > 2 else "two")
    else:
        words.append("a")
    if with_size and k.sized:
        words.append(g.size)
    if with_colour and len(k.colours) > 1:
        words.append(g.colour)
    words.append(str(rng.choice(k.plurals if g.count > 1 else k.nouns)))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


RELATIONS = ("next to", "to the left of", "to the right of", "above", "below")  # what _relation says


def _relation(a, b) -> tuple[str, str]:
    """Spatial relation of group a to group b from their centroids, and its converse."""
    (ax, ay), (bx, by) = a, b
    dx, dy = ax - bx, ay - by
    if max(abs(dx), abs(dy)) < 40:
        return "next to", "next to"
    if abs(dx) >= abs(dy):
        return ("to the left of", "to the right of") if dx < 0 else ("to the right of", "to the left of")
    return ("above", "below") if dy < 0 else ("below", "above")


_STRUCT_REL = {"runway": ("beside the runway", "near the runway"), "river": ("on the river", "in the river"),
               "sea": ("in the sea", "on the water"), "pond": ("on the pond",), "road": ("along the road", "on the road"),
               "parking lot": ("in the parking lot",), "bridge": ("on the bridge", "crossing the bridge")}
_ZONE_STRUCT = {"water": None, "road": "road", "lot": "parking lot", "bridge": "bridge"}


def _structure_of(zone: str, present) -> str | None:
    """The structure a group in `zone` is said to be at ('beside the runway'), of those `present`, or None."""
    s = _ZONE_STRUCT.get(zone)
    if zone == "water":
        s = next((x for x in ("river", "sea", "pond") if x in present), None)
    if zone == "land" and "runway" in present:
        s = "runway"
    return s if s is not None and s in present else None


_SINGULAR = {"are": "is", "stand": "stands", "grow": "grows", "lie": "lies", "float": "floats",
             "are parked": "is parked", "are waiting": "is waiting", "are moored": "is moored",
             "are docked": "is docked", "are located": "is located", "are laid out": "is laid out"}


def _verb(g: Group, rng) -> str:
    v = str(rng.choice(KINDS[g.kind].verbs))
    if g.count == 1:
        v = _SINGULAR[v]
    return v


def write_captions(label: str, realised, structures: list[dict], rng, n: int = 5):
    """Five distinct captions as chunk lists [(text, [instance ids])], from the realised groups."""
    scene = SCENES[label]
    struct_id = {o["class"]: o["id"] for o in structures}
    g0, ids0, c0 = realised[0]
    second = realised[1] if len(realised) > 1 else None
    third = realised[2] if len(realised) > 2 else None

    def sc(article=True):
        w = str(rng.choice(scene.words))
        return (("an " if w[0] in "aeiou" else "a ") + w) if article else w

    def where(g, c):
        return str(rng.choice(_POSITION_PHRASES[position_name(*c)]))

    def struct_phrase(g):
        """'beside the runway' style phrase for a group, with the structure's id, or None."""
        s = _structure_of(g.zone, struct_id)
        if s is None:
            return None
        phrase = str(rng.choice(_STRUCT_REL[s]))
        head, noun = phrase.rsplit(" the ", 1)
        return [(head, []), ("the " + noun, [struct_id[s]])]

    def NP(g, ids, **kw):
        return (_np(g, rng, **kw), list(ids))

    # every literal word of these templates is in _TEMPLATE_WORDS (the vocabulary reads it)
    templates = []
    # T1: position in the scene
    templates.append(lambda full: [NP(g0, ids0, with_colour=full), (_verb(g0, rng) + " " + where(g0, c0) + " of", []),
                                   ("the " + sc(False), [])])
    # T2: the scene with the main group
    templates.append(lambda full: [(sc().capitalize() + " with", []), NP(g0, ids0, with_count=full, with_size=True),
                                   (where(g0, c0), [])])
    # T3: "there are ..." with the structure relation or position
    def t3(full):
        sp = struct_phrase(g0)
        be = "there is" if g0.count == 1 else "there are"
        return [(be, []), NP(g0, ids0, with_colour=full)] + (sp if sp else [(where(g0, c0), [])]) + \
               [("in " + sc(), [])]
    templates.append(t3)
    if second is not None:
        g1, ids1, c1 = second
        rel, conv = _relation(c0, c1)
        templates.append(lambda full: [NP(g0, ids0, with_colour=full), (_verb(g0, rng) + " " + rel, []),
                                       NP(g1, ids1)])
        templates.append(lambda full: [(sc().capitalize() + " where", []), NP(g1, ids1, with_count=full),
                                       (_verb(g1, rng) + " " + conv, []), NP(g0, ids0)])
        templates.append(lambda full: [NP(g0, ids0, with_count=full), ("and", []), NP(g1, ids1, with_colour=False),
                                       ("can be seen in " + sc(), [])])
    if third is not None:
        g2, ids2, c2 = third
        templates.append(lambda full: [(sc().capitalize() + " with", []), NP(g0, ids0), (",", []),
                                       NP(g2, ids2, with_colour=full), (where(g2, c2) + " and", []),
                                       NP(second[0], second[1], with_count=False)])
    templates.append(lambda full: [(where(g0, c0).capitalize() + " of the image", []), NP(g0, ids0, with_size=full),
                                   (_verb(g0, rng), [])])
    templates.append(lambda full: [(sc().capitalize() + " containing", []), NP(g0, ids0, with_colour=full, with_size=True)])

    out, seen = [], set()
    order = list(rng.permutation(len(templates)))
    tries = 0
    while len(out) < n and tries < 60:
        t = templates[order[tries % len(order)]]
        tries += 1
        chunks = t(len(out) < 3 or rng.random() < 0.5)  # the first three state every attribute
        chunks = chunks + [(".", [])]
        raw = _join(chunks)
        if raw in seen:
            continue
        seen.add(raw)
        out.append(chunks)
    return out


def _join(chunks) -> str:
    s = ""
    for text, _ in chunks:
        s += text if (text in (".", ",") or not s) else " " + text
    return s[0].upper() + s[1:]


def chunks_to_spans(chunks) -> tuple[str, list[Span]]:
    """The caption text, and a Span (token indices of rsdemo.data.text.tokenize) per referring chunk."""
    spans, pos = [], 0
    for text, ref in chunks:
        n = len(tokenize(text))
        if ref:
            spans.append(Span(pos, pos + n, tuple(ref)))
        pos += n
    return _join(chunks), spans


def keyword_words(keyword: str) -> set[str]:
    """Every caption word that names a keyword (scene, object class or structure), synonyms and plurals too."""
    words = set(tokenize(keyword))
    if keyword in SCENES:
        for w in SCENES[keyword].words:
            words |= set(tokenize(w))
    if keyword in KINDS:
        for w in KINDS[keyword].nouns + KINDS[keyword].plurals:
            words |= set(tokenize(w))
    for w in STRUCTURE_NOUNS.get(keyword, ()):
        words |= set(tokenize(w))
    return words - {"a", "an", "the", "with", "area", "land"}


# the words write_captions' templates write besides the word lists (scene words, noun phrases, positions, relations)
_TEMPLATE_WORDS = "a an the there is are with where and can be seen in of image containing some several pair . ,"


def grammar_words() -> set[str]:
    """Every token write_captions can write, read off the tables it draws from (no image is rendered): counts up
    to the largest a scene allows, singular forms only of classes that can appear alone, colours only of classes
    with more than one, structure phrases only for structures a scene's main group can stand at."""
    top = max(hi for s in SCENES.values() for _, _, hi, _ in s.groups)   # the largest count a group can have
    texts = [_TEMPLATE_WORDS, *RELATIONS, *NUMBERS[1:top + 1]] + (["many"] if top >= len(NUMBERS) else [])
    for k in KINDS.values():
        counts = [(lo, hi) for s in SCENES.values() for kind, lo, hi, _ in s.groups if kind == k.name]
        if not counts:
            continue
        if min(lo for lo, _ in counts) == 1:
            texts += [*k.nouns, *(_SINGULAR[v] for v in k.verbs)]
        if max(hi for _, hi in counts) > 1:
            texts += [*k.plurals, *k.verbs]
        if len(k.colours) > 1:
            texts += list(k.colours)
        if k.sized:
            texts.append("small large")
    for s in SCENES.values():
        texts += list(s.words)
        at = _structure_of(s.groups[0][3], s.structures)    # only the main group's structure is named (T3)
        if at is not None:
            texts += list(_STRUCT_REL[at])
    texts += [p for ps in _POSITION_PHRASES.values() for p in ps]
    return {t for text in texts for t in tokenize(text)}


@functools.lru_cache(maxsize=1)
def vocabulary() -> Vocab:
    """The caption grammar's words, alphabetical: the default vocabulary of a fresh word-level text encoder (a
    trained one carries its training captions' vocabulary in its checkpoint)."""
    return Vocab(sorted(grammar_words()))
