"""The sweep-level progress line: runs finished / total, diverged, failed, elapsed, ETA.

Every job leaves a small JSON marker in ``<sweep>/.progress/`` when it ends (whatever
ran it: this process, joblib workers, submitit, SLURM nodes sharing the folder); the
launching process polls the markers from a background thread and prints one line:

    [sweep default] 14/36 runs (5 already finished) | 2 diverged | 0 failed | 3m12s elapsed | ETA 5m40s

On a terminal, with no per-run bars to share it with, the line is redrawn in place
every second; otherwise a new line is printed whenever a run ends (plus a heartbeat),
so logs and parallel jobs never flood the screen.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, TextIO

from initsuite.atomic import atomic_write_text
from initsuite.tables import HELD

PROGRESS_DIR = ".progress"


def write_marker(sweep_dir: Path, key: str, outcome: Dict) -> None:
    """Record that one job of the sweep ended (atomically: the monitor may be reading)."""
    atomic_write_text(Path(sweep_dir) / PROGRESS_DIR / f"{key}.json", json.dumps(outcome, default=str))


def read_markers(sweep_dir: Path) -> List[Dict]:
    out = []
    for path in sorted((Path(sweep_dir) / PROGRESS_DIR).glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):  # vanished or replaced while listing
            continue
    return out


def reset(sweep_dir: Path) -> None:
    """Forget the markers of an earlier launch: the line counts this launch's jobs."""
    shutil.rmtree(Path(sweep_dir) / PROGRESS_DIR, ignore_errors=True)


@dataclass
class Counts:
    finished: int = 0  # jobs that ended, whatever their outcome
    skipped: int = 0  # ... of which were already done/diverged before this launch
    diverged: int = 0
    failed: int = 0
    held: int = 0  # ... skipped because another live launcher holds them (initsuite.run.lease)

    @classmethod
    def of(cls, markers: List[Dict]) -> "Counts":
        c = cls()
        for m in markers:
            c.finished += 1
            c.held += m.get("status") == HELD
            c.skipped += bool(m.get("skipped")) and m.get("status") != HELD
            c.diverged += m.get("status") == "diverged"
            c.failed += m.get("status") == "failed"
        return c


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def eta(counts: Counts, total: Optional[int], elapsed: float) -> Optional[float]:
    """Remaining runs x wall time per trained run so far (already-finished runs cost nothing)."""
    trained = counts.finished - counts.skipped - counts.held
    if not total or trained <= 0:
        return None
    return max(0, total - counts.finished) * elapsed / trained


def format_line(name: str, counts: Counts, total: Optional[int], elapsed: float) -> str:
    parts = [f"[sweep {name}] {counts.finished}/{total if total is not None else '?'} runs"
             + (f" ({counts.skipped} already finished)" if counts.skipped else ""),
             f"{counts.diverged} diverged", f"{counts.failed} failed",
             *([f"{counts.held} held by other launchers"] if counts.held else []),
             f"{fmt_duration(elapsed)} elapsed"]
    if total is None or counts.finished < total:
        parts.append(f"ETA {fmt_duration(eta(counts, total, elapsed))}")
    return " | ".join(parts)


class ProgressMonitor:
    """Polls a sweep's markers in a daemon thread and prints the progress line.

    ``live``: redraw one line in place (a terminal that nothing else writes to);
    otherwise print a new line when the count changes, or every ``heartbeat`` seconds.
    """

    def __init__(self, sweep_dir: Path, total: Optional[int], name: str, live: bool,
                 stream: Optional[TextIO] = None, interval: float = 1.0, heartbeat: float = 300.0):
        self.sweep_dir, self.total, self.name, self.live = Path(sweep_dir), total, name, live
        self.stream = stream or sys.stderr
        self.interval, self.heartbeat = interval, heartbeat
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_finished = -1
        self._last_print = 0.0
        try:
            self._tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False

    def counts(self) -> Counts:
        return Counts.of(read_markers(self.sweep_dir))

    def line(self) -> str:
        return format_line(self.name, self.counts(), self.total, time.time() - self.started)

    def start(self) -> "ProgressMonitor":
        self._thread = threading.Thread(target=self._loop, name="initsuite-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> str:
        """Stop polling; print and return the final line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        text = self.line()
        self._write(text, final=True)
        return text

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                counts = self.counts()
                now = time.time()
                if self.live or counts.finished != self._last_finished or now - self._last_print > self.heartbeat:
                    self._last_finished, self._last_print = counts.finished, now
                    self._write(format_line(self.name, counts, self.total, now - self.started))
            except Exception:  # a progress line must never take the sweep down
                continue

    def _write(self, text: str, final: bool = False) -> None:
        try:
            if self.live:
                self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            else:  # on a terminal, over any per-run bar (it redraws itself on the next line)
                self.stream.write(("\r\033[K" if self._tty else "") + text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # closed stream at interpreter exit
            pass
