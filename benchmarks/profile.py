"""Where the operator's CPU went (``--profile FILE``): busy time by package, top functions."""

from __future__ import annotations

import pstats
from collections import Counter
from pathlib import Path
from typing import Any


def print_profile(path: Path, label: str, top: int = 15) -> None:
    stats = pstats.Stats(str(path))
    by_package: Counter[str] = Counter()
    idle = 0.0
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, name), (_, _, tottime, _, _) in raw.items():
        if "poll" in name and "epoll" in name:
            idle += tottime
            continue
        by_package[_package(filename, name)] += tottime
    busy = sum(by_package.values()) or 1e-9
    print(f"\n--- operator profile ({label}): {busy:.1f}s busy, {idle:.1f}s idle in epoll; full profile: {path}")
    for package, seconds in by_package.most_common(12):
        print(f"  {seconds:7.2f}s {seconds / busy:6.1%}  {package}")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def _package(filename: str, name: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/aigw_operator/" in filename:
        return "aigw_operator." + filename.rsplit("/aigw_operator/", 1)[1].removesuffix(".py").replace("/", ".")
    if filename.startswith("<frozen"):
        return filename.strip("<>").replace("frozen ", "")
    if filename == "~":
        return f"built-in: {name}"
    return "stdlib: " + Path(filename).stem
