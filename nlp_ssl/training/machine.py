"""How a run uses the machine: CPU threads per process, bf16 on CPUs that have it, TF32 on Ampere.

Each detection is one small function, so that tests (and users who know better) can switch it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger("nlp_ssl.training.machine")

#: Whether ``mixed_precision=auto`` picks bf16 on CPUs with bf16 in hardware (AVX-512 BF16 or AMX),
#: as it does on CUDA. Off until fp32 and bf16 default runs have been compared side by side on such
#: a CPU: on a CPU with only AVX2 a bf16 matmul is ~58x slower than fp32, so the comparison needs
#: one with bf16 in hardware. ``impl.mixed_precision=bf16`` opts in.
CPU_BF16_AUTO = False

#: Launchers that write OMP_NUM_THREADS=1 into the processes they start when the user gave no thread
#: count: ``accelerate launch`` on CPU, ``torchrun`` with more than one process per node. Matched
#: against the parent process's command line.
_LAUNCHERS = ("accelerate", "accelerate.commands.launch", "torchrun", "torch.distributed.run", "torch.distributed.launch")


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic in hardware (AVX-512 BF16, AMX). oneDNN also runs bf16 on
    plain AVX-512 or AVX2 by conversion, which is no faster than fp32."""
    cpu = torch.cpu
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def auto_mixed_precision() -> str:
    """What ``mixed_precision=auto`` means here: bf16 on CUDA with bf16 and on CPUs with native bf16, else ``no``."""
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if CPU_BF16_AUTO and cpu_has_native_bf16() else "no"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: what a scheduler or ``taskset`` granted)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_world_size(default: int) -> int:
    """Processes of this run on this machine: what the launcher says (torchrun, MPI), else ``default``."""
    for name in ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(default, 1)


def _launcher_start(pid: int) -> tuple[set[str], list[str]] | None:
    """The names in the environment process ``pid`` was started with, and its command line, if it is
    a launcher (None otherwise, or where /proc cannot tell). /proc/PID/environ is the environment at
    start: what the launcher later writes into its own ``os.environ`` for its children is not in it."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        if not any(Path(a).name in _LAUNCHERS or a in _LAUNCHERS for a in argv[:4]):
            return None
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return {item.split("=", 1)[0] for item in environ if "=" in item}, argv


def users_thread_count() -> str | None:
    """``OMP_NUM_THREADS`` when the user chose it; None when unset or written by a launcher.

    ``accelerate launch`` and ``torchrun`` pass on a value the user gave them (``OMP_NUM_THREADS`` in
    their own environment, or ``--num_cpu_threads_per_process``), but also write 1 when given none.
    So a value under one of them counts as the user's only when the launcher itself started with
    ``OMP_NUM_THREADS`` or was given ``--num_cpu_threads_per_process``.
    """
    value = os.environ.get("OMP_NUM_THREADS")
    if not value:
        return None
    launcher = _launcher_start(os.getppid())
    if launcher is None:
        return value
    environ, argv = launcher
    if "OMP_NUM_THREADS" in environ or any(a.startswith("--num_cpu_threads_per_process") for a in argv):
        return value
    return None


def set_cpu_threads(processes_here: int) -> tuple[int, str]:
    """Give this process its share of the cores (at least 1) unless the user set a thread count.
    Returns the threads now in use and where that number came from, for the log."""
    chosen = users_thread_count()
    if chosen is not None:
        if chosen.isdigit() and int(chosen) > 0:
            torch.set_num_threads(int(chosen))
        return torch.get_num_threads(), f"the user's OMP_NUM_THREADS={chosen}"
    cores = available_cores()
    threads = max(cores // processes_here, 1)
    torch.set_num_threads(threads)
    return threads, f"{cores} core(s) / {processes_here} process(es) on this machine"


def set_tf32(allow: bool, device: torch.device) -> bool:
    """TF32 matmuls and convolutions on CUDA GPUs of compute capability 8.0 and later (Ampere,
    Hopper): fp32 tensors on the tensor cores, with a 10-bit mantissa in the products. Only the CUDA
    backends are touched; returns whether TF32 is on."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    precision = "tf32" if allow else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    return allow
