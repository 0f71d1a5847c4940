"""The data layer's errors (a leaf): DataError for input that cannot be used, Problem for a defect that is reported
and loading goes on. Every loader, the image decoder and the dataset report raise or collect these."""
from __future__ import annotations

from dataclasses import dataclass


class DataError(ValueError):
    """A dataset or image file is malformed or unusable. The message names the file and the line, field or reason."""


@dataclass(frozen=True)
class Problem:
    """A defect found while loading (blank caption, caption-count mismatch, ...): reported, never hidden."""
    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}" if self.where else f"{self.file}: {self.message}"
