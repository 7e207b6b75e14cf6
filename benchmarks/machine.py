"""What every benchmark shares: the machine it ran on (RESULTS.md must name the CPU), one
measured child process (wall time and its own peak RSS), and the alternating paired rounds of
the ablations."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Hashable, Sequence


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """'AMD EPYC, 2 cores, torch 2.13.0+cpu (CPU capability AVX2), Python 3.11.7'."""
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), Python {platform.python_version()}")


def timed(cmd: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child process; its output goes to files so
    that wait4 can reap it and read its own peak (``ru_maxrss``, KiB on Linux)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {returncode}:\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout


def publish(report: str, results: Path, title: str, write: bool) -> None:
    """Print a run's Markdown section and append it to its results file (titled when new)."""
    print(report)
    if write:
        results.parent.mkdir(parents=True, exist_ok=True)
        head = f"# {title}\n\n" if not results.exists() else ""
        with results.open("a", encoding="utf-8") as fh:
            fh.write(head + report + "\n")


def alternating_rounds(ways: Sequence[Hashable], repeats: int,
                       run: Callable[[Hashable], None]) -> dict[Hashable, list[float]]:
    """Seconds ``run(way)`` takes for each way, ``repeats`` rounds in one process, the order
    reversed every other round so that no way always runs first (warmest or coldest)."""
    seconds: dict[Hashable, list[float]] = {way: [] for way in ways}
    for round_ in range(repeats):
        for way in (list(ways) if round_ % 2 == 0 else list(ways)[::-1]):
            start = time.perf_counter()
            run(way)
            seconds[way].append(time.perf_counter() - start)
    return seconds


def paired_speed_lines(seconds: dict[Hashable, list[float]], base: Hashable, against: str,
                       label: Callable[[Hashable], str] = str) -> list[str]:
    """One line per way: its median seconds, each round's, and its speed against ``base``
    paired round by round (median and range), the figure an ablation reports."""
    lines = []
    for way, values in seconds.items():
        ratios = [b / v for b, v in zip(seconds[base], values)]
        lines.append(f"{label(way)}: median {statistics.median(values):.2f} s (per round "
                     f"{', '.join(f'{v:.1f}' for v in values)}); speed against {against} per round: "
                     f"median {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})")
    return lines
