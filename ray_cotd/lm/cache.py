"""What the model cache holds, and pruning its merged LoRA copies (`ray-cotd cache`).

The cache (`RAY_COTD_CACHE`, default ~/.cache/ray-cotd) has two kinds of model directories, both
written by lm.model and both remade on demand when missing:

    models/<gguf>-<digest>/     a GGUF checkpoint converted once to safetensors (~0.5 GB for the default)
    merged/<adapter>-<digest>/  a LoRA student merged into its base for vLLM on CPU (~270 MB in bf16,
                                ~540 MB in fp32, one per evaluated or served student and dtype)

Each has a SOURCE file saying where it came from. A merged copy's directory time is its last use
(merged_lora_source touches it when it reuses one), so `--older-than` keeps the copies recent runs
use. Deleting a copy an engine is loading at that moment fails that engine's start; a running
engine has its weights in memory already.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ray_cotd.lm.model import cache_root

KINDS = ("models", "merged")
_MERGED_SOURCE = re.compile(r"^LoRA adapter (?P<adapter>.+) merged into (?P<base>.+), (?P<dtype>\w+)$")


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # "models" or "merged"
    path: Path
    bytes: int
    last_used: float  # the directory's mtime (seconds since the epoch)
    source: str  # the SOURCE file's line
    adapter: str | None = None  # a merged copy's adapter directory

    @property
    def orphaned(self) -> bool:
        """A merged copy whose adapter directory is gone: nothing will use it again."""
        return self.adapter is not None and not Path(self.adapter).is_dir()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every finished model directory of the cache (temporary ones being written are left out)."""
    root = root or cache_root()
    entries = []
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_dir() or ".tmp" in path.name or not (path / "config.json").is_file():
                continue
            source_file = path / "SOURCE"
            source = source_file.read_text(errors="replace").strip() if source_file.is_file() else ""
            match = _MERGED_SOURCE.match(source) if kind == "merged" else None
            entries.append(CacheEntry(kind, path, _size(path), path.stat().st_mtime, source,
                                      match["adapter"] if match else None))
    return entries


def prune_merged(*, older_than_days: float | None = None, orphaned_only: bool = False, dry_run: bool = False,
                 root: Path | None = None) -> list[CacheEntry]:
    """Delete merged LoRA copies: all of them, or those unused for `older_than_days`, or (with
    `orphaned_only`) those whose adapter directory is gone. Returns what was (or, with `dry_run`,
    would be) deleted."""
    if older_than_days is not None and older_than_days < 0:
        raise ValueError(f"--older-than: {older_than_days} must be >= 0 days")
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    chosen = [e for e in cache_entries(root) if e.kind == "merged"
              and (cutoff is None or e.last_used < cutoff) and (not orphaned_only or e.orphaned)]
    if not dry_run:
        for entry in chosen:
            shutil.rmtree(entry.path, ignore_errors=True)
    return chosen


def format_entries(entries: list[CacheEntry], root: Path) -> str:
    """The table `ray-cotd cache` prints: kind, size, last use, name, source."""
    if not entries:
        return f"{root}: no cached models"
    lines = [f"{root}  ({_gb(sum(e.bytes for e in entries))} in {len(entries)} directories)"]
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        note = "  [adapter gone]" if e.orphaned else ""
        lines.append(f"  {e.kind:<6}  {_gb(e.bytes):>8}  {used}  {e.path.name}{note}\n          {e.source}")
    return "\n".join(lines)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


__all__ = ["CacheEntry", "cache_entries", "format_entries", "prune_merged"]
