"""Choosing the compute dtype by what the hardware runs natively (``--dtype auto``).

bfloat16 is several times faster than float32 where the hardware has bf16 arithmetic (CUDA
GPUs that support it; CPUs with AMX or AVX512-BF16), and 50-80x SLOWER where it is emulated
(CPUs with only AVX2: a bf16 matmul measured 0.9-1.1 GFLOP/s against 43-67 GFLOP/s in float32,
one thread). ``torch.backends.cpu.get_cpu_capability()`` reports "AVX512" for CPUs with and
without the BF16 extension, so the CPU's own feature flags decide (``/proc/cpuinfo`` on
Linux; elsewhere only an AMX capability string counts).
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def bf16_support(device: str = "cpu") -> tuple[bool, str]:
    """(native bf16?, the reason in words) for ``device`` ("cpu" or "cuda[:N]")."""
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"CUDA device {torch.cuda.get_device_name()} supports bfloat16"
        return False, "the CUDA device does not support bfloat16"
    capability = cpu_capability()
    native = sorted(set(BF16_CPU_FLAGS) & cpu_flags())
    if native or "AMX" in capability.upper():
        return True, f"CPU capability {capability} with {', '.join(native) or 'AMX'}: native bfloat16"
    return False, f"CPU capability {capability} without AMX or AVX512-BF16: bfloat16 is emulated (slow)"


def resolve_dtype(requested: str, device: str = "cpu") -> tuple[str, str]:
    """("float32" | "bfloat16", why) for a requested dtype; only "auto" consults the hardware."""
    requested = str(requested)
    if requested != "auto":
        return requested, "requested"
    native, why = bf16_support(device)
    return ("bfloat16" if native else "float32"), f"auto: {why}"


# ----------------------------------------------------------------------------- device

def check_device_name(requested: str) -> str:
    """``requested`` if it names a device rmaudit can use ("auto", "cpu", "cuda", "cuda:N"),
    else a one-line input error (a spelling check only: nothing is imported)."""
    from rmaudit.errors import RmauditInputError

    name = str(requested).strip().lower()
    kind, _, index = name.partition(":")
    if (kind in ("auto", "cpu") and not index) or (kind == "cuda" and (not index or index.isdigit())):
        return name
    raise RmauditInputError(f"--device: expected auto, cpu, cuda or cuda:N, got {requested!r}")


def resolve_device(requested: str) -> tuple[str, str]:
    """(device, why) for ``--device``: "auto" is the first CUDA device when one is present,
    else the CPU; a CUDA device that is not there is a one-line input error."""
    import torch

    from rmaudit.errors import RmauditInputError

    name = check_device_name(requested)
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda", f"auto: CUDA device {torch.cuda.get_device_name(0)}"
        return "cpu", "auto: no CUDA device"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RmauditInputError(f"--device {name}: no CUDA device is available to this torch "
                                    f"({torch.__version__}); use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RmauditInputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return name, f"requested: {torch.cuda.get_device_name(index)}"
    return "cpu", "requested"


# ----------------------------------------------------------------------------- CPU threads

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (a
    container limited to 2 CPUs on a 64-core host would otherwise start 64 threads)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = CGROUP_CPU_MAX.read_text(encoding="utf-8").split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


PROC_STAT = Path("/proc/stat")
BUSY_WINDOW_S = 0.1  # 10 clock ticks a core at 100 Hz: enough to tell a busy core from an idle one


def _cpu_seconds() -> tuple[float, float] | None:
    """(seconds every core spent busy since boot, seconds this process has run), or None
    where /proc/stat is missing."""
    import os

    try:
        fields = [int(v) for v in PROC_STAT.read_text(encoding="ascii").split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_busy_cores(window: float = BUSY_WINDOW_S) -> float | None:
    """Cores that other processes keep busy now: the machine's busy time over ``window``
    seconds less this process's own, or None where /proc/stat is missing. Unlike the load
    average this sees a job that started a moment ago and forgets one that just ended (a
    check right after a train would otherwise be told that the train still competes)."""
    import time

    before, start = _cpu_seconds(), time.monotonic()
    if before is None:
        return None
    time.sleep(window)
    after, wall = _cpu_seconds(), time.monotonic() - start
    if after is None:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)


def configure_cpu_threads(threads: int | None = None) -> dict:
    """Set torch's CPU threads (``threads``, else the usable cores, shared among the processes
    a launcher started on this machine: ``LOCAL_WORLD_SIZE``) and report how busy the CPU
    already is. Two torch processes with a thread per core each slow each other down
    several times over on a small machine, so a busy CPU is said, not silently suffered.

    Returns facts for the report: ``cpu_threads``, ``cpu_load_at_start``,
    ``cpu_busy_cores_at_start`` (other processes' use, measured over a tenth of a second) and,
    when the other work and rmaudit's threads together need more than the usable cores,
    ``cpu_busy``. Without /proc/stat the 1-minute load average decides."""
    import os

    import torch

    cores = usable_cores()
    chosen = threads or max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(chosen)
    facts: dict = {"cpu_threads": chosen, "cpu_cores_usable": cores}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None:
        facts["cpu_load_at_start"] = round(load, 2)
    busy, least = other_busy_cores(), 0.5
    if busy is not None:
        facts["cpu_busy_cores_at_start"] = round(busy, 2)
        measured = f"other processes kept {busy:.1f} of {cores} cores busy as it started"
    elif load is not None:  # a whole core, as the average also holds work that has ended
        busy, least, measured = load, 1.0, f"1-minute load {load:.1f} on {cores} cores"
    if busy is not None and busy >= least and busy + chosen > cores + 0.25:
        facts["cpu_busy"] = (f"the CPU was already busy before this run ({measured}) and rmaudit uses {chosen} "
                             "thread(s): another process competes, so this run will be slower; run torch jobs one "
                             "at a time or pass --threads")
    return facts
