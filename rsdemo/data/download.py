"""Downloads over plain HTTP(S) with the standard library: mirrors in order, resumable, checked before use.

What we decided:
- urllib only (no requests dependency); one file at a time, streamed to `<dest>.part`, renamed when complete.
- Resuming: a `.part` left by an interrupted run (or by a dropped connection in this run) is continued with an
  HTTP Range request, but only from the URL that wrote it (`<dest>.part.url`); a server that ignores Range and
  answers 200 is read from the start again.
- Mirrors are tried in order. A host that did not answer at all (no DNS, refused, timed out) is not asked again
  for the other files of the same call, so an offline machine fails after one timeout per host, not per file.
- A file with a known sha256 that does not match is deleted and the next mirror tried; the error names the
  file. Files without a known hash (archives) are checked by the caller, on their contents.
- Progress: `progress(done, total, what)` (total None when the server does not say), or None for a tqdm bar
  (which gr.Progress(track_tqdm=True) shows in the page), or False for none.
- Network timeout per socket operation: `timeout`, else $RSDEMO_NET_TIMEOUT, else 15 s.
"""
from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ..files import file_sha256
from .errors import DataError

CHUNK = 1 << 20
log = logging.getLogger(__name__)
USER_AGENT = "rsdemo-download/1"


class _NoAnswer(OSError):
    """The host did not answer at all (no DNS, refused, timed out before any response)."""


class FetchError(DataError):
    """No mirror delivered a file; `failures` lists (url, reason) per attempt."""

    def __init__(self, message: str, failures=()):
        super().__init__(message)
        self.failures = list(failures)


def net_timeout(timeout: float | None = None) -> float:
    if timeout is not None:
        return float(timeout)
    try:
        return float(os.environ.get("RSDEMO_NET_TIMEOUT", 15))
    except ValueError:
        return 15.0


def host(url: str) -> str:
    return urlsplit(url).netloc


class Bar:
    """The `progress` argument as one object: a callback, a tqdm bar, or nothing."""

    def __init__(self, progress, what: str, unit: str = "B"):
        self.progress, self.what, self.unit, self.bar = progress, what, unit, None

    def __call__(self, done: int, total: int | None) -> None:
        if self.progress is False:
            return
        if callable(self.progress):
            self.progress(done, total, self.what)
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, desc=self.what, unit=self.unit, unit_scale=self.unit == "B",
                            leave=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _get(url: str, start: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _content_range(resp) -> tuple[int | None, int | None]:
    """(first byte, total size) of a 206 answer's Content-Range: 'bytes 100-199/1000'."""
    val = resp.headers.get("Content-Range", "")
    try:
        unit, _, rest = val.partition(" ")
        span, _, total = rest.partition("/")
        first = int(span.split("-")[0])
        return first, (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None, None


def _fetch_one(url: str, part: Path, timeout: float, bar: Bar) -> None:
    """Appends the rest of `url` to `part` (Range from its current size); raises OSError on any failure, leaving
    what arrived in `part` for the next try."""
    tag = part.with_name(part.name + ".url")
    start = part.stat().st_size if part.is_file() else 0
    if start and (not tag.is_file() or tag.read_text().strip() != url):
        start = 0  # written from another mirror: its bytes may differ, start over
    tag.write_text(url)
    try:
        resp = _get(url, start, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # asked past the end: the part is complete, or the file changed
            _, total = _content_range(e)
            if total == start:
                return
            part.unlink(missing_ok=True)
            return _fetch_one(url, part, timeout, bar)
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _NoAnswer(str(getattr(e, "reason", None) or e) or type(e).__name__) from e
    with resp:
        status = getattr(resp, "status", 200)
        if status == 206:
            first, total = _content_range(resp)
            if first != start:
                raise OSError(f"server resumed at byte {first}, asked for {start}")
        else:  # 200: the whole file (a server that ignores Range, or a fresh start)
            start = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done = start
        log.info("downloading %s from %s%s%s", part.name[:-5], url, f" ({total:,} bytes)" if total else "",
                 f", resuming at byte {start:,}" if start else "")  # only once a server has answered
        bar(done, total)
        with open(part, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                bar(done, total)
        if total is not None and done < total:
            raise OSError(f"connection closed after {done:,} of {total:,} bytes")


def download(urls, dest, sha256: str | None = None, *, progress=None, timeout: float | None = None,
             dead: set | None = None, retries: int = 3) -> str:
    """Fetches `dest` from the first of `urls` that delivers it (and matches `sha256`, when given); returns
    that URL. A dropped connection is resumed up to `retries` times per mirror while bytes keep arriving.
    `dead`: hosts that did not answer, shared between calls (updated here). Raises FetchError with every
    mirror's reason."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    tag = part.with_name(part.name + ".url")
    timeout = net_timeout(timeout)
    dead = set() if dead is None else dead
    failures: list[tuple[str, str]] = []
    bar = Bar(progress, dest.name)
    try:
        for url in urls:
            if host(url) in dead:
                failures.append((url, "host did not answer earlier"))
                continue
            tries, reason = 0, ""
            while True:
                before = part.stat().st_size if part.is_file() else 0
                try:
                    _fetch_one(url, part, timeout, bar)
                    reason = ""
                    break
                except urllib.error.HTTPError as e:
                    reason = f"HTTP {e.code} {e.reason}"
                    break
                except _NoAnswer as e:
                    reason = str(e)
                    dead.add(host(url))  # no answer at all: do not ask this host again for other files
                    break
                except (OSError, http.client.HTTPException) as e:  # dropped, timed out, cut short
                    reason = str(getattr(e, "reason", None) or e) or type(e).__name__
                    after = part.stat().st_size if part.is_file() else 0
                    if after <= before or tries >= retries:
                        break
                    tries += 1  # bytes arrived before the drop: resume from where it stopped
            if reason:
                failures.append((url, reason))
                continue
            if sha256 is not None:
                got = file_sha256(part)
                if got != sha256:
                    part.unlink(missing_ok=True)
                    tag.unlink(missing_ok=True)
                    failures.append((url, f"sha256 {got[:12]}… differs from the manifest's {sha256[:12]}…"))
                    continue
            os.replace(part, dest)
            tag.unlink(missing_ok=True)
            return url
    finally:
        bar.close()
    detail = "; ".join(f"{u}: {r}" for u, r in failures) or "no URL given"
    raise FetchError(f"{dest.name}: no mirror delivered it ({detail})", failures)
