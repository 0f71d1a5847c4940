"""Which float kernels this process computes with: the CPU, ATen's vector ISA and the kernel variables set.

A leaf (stdlib only at import; torch is read inside kernel_setting, so a parent process can set the variables for
its workers before any torch starts). Three users: cards record it (training/cards.py, drift --record), the
frozen-feature cache keys on it (features.py: features computed under other kernels differ in their last bits,
and a card checked exactly must see its own), and rsdemo.drift compares it with a card's record.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

KERNEL_VARS = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_DEFAULT_FPMATH_MODE")


def cpu_name() -> str:
    """The processor's model name (as /proc/cpuinfo gives it), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def kernel_setting() -> dict:
    """What decides this process's float results: the CPU, ATen's vector ISA, and the kernel variables set."""
    import torch

    return {"cpu": cpu_name(), "isa": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "env": {k: os.environ[k] for k in KERNEL_VARS if os.environ.get(k)}}
