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
