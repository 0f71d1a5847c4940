"""Tokenizer and vocabulary shared by the data layer (token spans) and the text encoders."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased words, digits and single punctuation marks. Span indices in the data refer to this."""
    return _TOKEN.findall(text.lower())


class Vocab:
    """Word <-> id. 0 is padding, 1 is unknown; the rest by descending frequency (ties alphabetical)."""
    PAD, UNK = "<pad>", "<unk>"

    def __init__(self, words: list[str]):
        self.itos = [self.PAD, self.UNK] + [w for w in words if w not in (self.PAD, self.UNK)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts, min_count: int = 1) -> "Vocab":
        counts = Counter(t for text in texts for t in tokenize(text))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(t, 1) for t in tokenize(text)]

    def to_json(self) -> str:
        return json.dumps(self.itos)

    @classmethod
    def from_json(cls, s: str) -> "Vocab":
        return cls(json.loads(s)[2:])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        return cls.from_json(Path(path).read_text())
