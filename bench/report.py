"""Shared by the bench scripts: machine facts and writing one named section of docs/BENCHMARKS.md."""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def machine() -> str:
    import numpy
    import PIL

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {numpy.__version__}, "
            f"pillow {PIL.__version__}")


def system() -> dict:
    """CPU model, cores, RAM, OS and the load at the time of the run (other jobs share this machine)."""
    import platform as pf

    cpu = machine().split(",")[0]
    ram = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram / 2**30, 1),
            "os": f"{pf.system()} {pf.release()} ({pf.freedesktop_os_release().get('PRETTY_NAME', '')})"
            if hasattr(pf, "freedesktop_os_release") and os.path.exists("/etc/os-release") else pf.platform(),
            "load": [round(x, 2) for x in load]}


def versions() -> dict:
    """Versions of what the figures depend on; a missing package is reported, not fatal."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name, dist in (("torch", "torch"), ("faiss", "faiss-cpu"), ("open_clip", "open_clip_torch"),
                       ("gradio", "gradio"), ("numpy", "numpy"), ("plotly", "plotly"), ("kaleido", "kaleido")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def rss() -> int:
    """Resident set size of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's RSS every `every` s on a thread while the block runs: `peak - start` is the extra
    memory the block needed (sampled, so a spike shorter than `every` can be missed)."""

    def __init__(self, every: float = 0.001):
        import threading

        self.every, self._stop, self._t = every, threading.Event(), None
        self.start = self.peak = 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            self._stop.wait(self.every)

    def __enter__(self):
        import threading

        self.start = self.peak = rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())

    @property
    def delta(self) -> int:
        return self.peak - self.start


def timings(fn, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_section(name: str, body: str, doc: Path = DOC,
                  title: str = "# Benchmarks\n\nEvery figure here is written by a script in bench/.\n") -> None:
    """Replaces (or appends) the section between <!-- name --> markers of `doc`, leaving the others alone."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else title
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->"
    pat = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
