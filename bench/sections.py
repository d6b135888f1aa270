"""A benchmark's own section of ``docs/benchmarks.md``, rewritten in place.

``bench/scenarios.py`` rewrites the top of the page and keeps everything after its
findings marker; ``bench/scale.py`` and ``bench/real_size.py`` each keep their section
there, between ``<!-- NAME: begin -->`` and ``<!-- NAME: end -->``, and replace only it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

FINDINGS = "<!-- Findings below are written by hand and kept when the script rewrites this file. -->"


def write_section(page: Path, name: str, text: str) -> None:
    """Put ``text`` in ``page`` as section ``name``: in place of the old one, else before the
    findings marker's hand-written findings (after the marker, so scenarios.py keeps it)."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    current = page.read_text() if page.exists() else ""
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        _, tail = rest.split(end, 1)
        page.write_text(head + block + tail.lstrip("\n"))
        return
    if FINDINGS in current:
        head, tail = current.split(FINDINGS, 1)
        page.write_text(head + FINDINGS + "\n\n" + block + "\n" + tail.lstrip("\n"))
        return
    page.write_text(current + ("\n" if current else "") + FINDINGS + "\n\n" + block)


def machine() -> str:
    """nproc, CPU model, Python, load: what the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = f"{platform.system()} {platform.release()}"
    return f"nproc {cores}, CPU {model}, Python {platform.python_version()} ({system})"


def load() -> str:
    """The load average now (1, 5, 15 minutes)."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())
