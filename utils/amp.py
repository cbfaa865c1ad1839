"""Reduced precision: torch.autocast from an amp name ('bf16' / 'fp16' / None), and the --precision choice."""
import contextlib
import dataclasses
from typing import Optional

import torch

from utils.errors import UserError

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
PRECISIONS = ('fp32', 'bf16', 'fp16', 'auto')
# the viewer's tiles may also run the MLP's hidden layers in int8 (CPU; models/fast_query.py, Int8Layers)
VIEW_PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8', 'auto')
# /proc/cpuinfo flags of CPUs that multiply bf16 in hardware (AVX512-BF16 dot products, AMX tiles)
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def autocast(device: torch.device, amp: Optional[str]) -> contextlib.AbstractContextManager:
    """torch.autocast for amp in AMP_DTYPES on `device`, or a no-op context for None."""
    if amp is None:
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)} or None, not {amp!r}")
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def cpu_flags(path: str = '/proc/cpuinfo') -> frozenset:
    """The CPU feature flags listed in /proc/cpuinfo (empty where the file is absent, e.g. not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16() -> Optional[str]:
    """The reason this CPU multiplies bf16 natively ('avx512_bf16', 'amx_bf16', torch's capability), or None.

    Without hardware support bf16 matmuls are emulated by converting to fp32 and are slower than
    fp32, so 'auto' must not guess: it asks the CPU flags and torch's own dispatch capability.
    """
    found = [flag for flag in NATIVE_BF16_FLAGS if flag in cpu_flags()]
    capability = torch.backends.cpu.get_cpu_capability()
    if 'BF16' in capability.upper() or 'AMX' in capability.upper():
        found.append(f"torch capability {capability}")
    return ', '.join(found) or None


@dataclasses.dataclass(frozen=True)
class Precision:
    """What --precision resolved to: amp (None = fp32, else a key of AMP_DTYPES) and why, for the log.

    int8: the MLP's hidden layers in int8 (amp None); auto: chosen by 'auto' (a caller may fall back to fp32).
    """
    amp: Optional[str]
    reason: str
    int8: bool = False
    auto: bool = False

    @property
    def name(self) -> str:
        """'fp32', 'bf16', 'fp16' or 'int8'."""
        return 'int8' if self.int8 else self.amp or 'fp32'


def resolve_precision(choice: str, device: torch.device, int8: bool = False) -> Precision:
    """--precision fp32|bf16|fp16|auto (and int8 where the caller runs it) on `device` -> Precision.

    fp16 on a CPU is a UserError (slow); int8 is for CPUs, and 'auto' picks it on a CPU without native bf16.
    """
    kind = torch.device(device).type
    choices = VIEW_PRECISIONS if int8 else PRECISIONS
    if choice not in choices:
        raise UserError(f"--precision must be one of {', '.join(choices)}, not {choice!r}")
    if choice == 'int8':
        if kind != 'cpu':
            raise UserError(f"--precision int8 is for the CPU; on {kind} use bf16 or fp32")
        return Precision(None, "asked for", int8=True)
    if choice == 'fp16' and kind == 'cpu':
        # measured (benchmarks/precision_accuracy.py): accurate, but ~6.7x slower than fp32 without fp16 units
        raise UserError("--precision fp16 is for CUDA: on the CPU it is several times slower than fp32; "
                        "use fp32 or bf16")
    if choice == 'fp32':
        return Precision(None, "asked for")
    if choice in AMP_DTYPES:
        return Precision(choice, "asked for")
    if kind == 'cuda':
        return Precision('bf16', "auto: CUDA", auto=True)
    native = cpu_native_bf16() if kind == 'cpu' else None
    if native:
        return Precision('bf16', f"auto: the CPU has native bf16 ({native})", auto=True)
    if int8 and kind == 'cpu':
        # measured (benchmarks/viewer_speed.py, precision_accuracy.py): ~1.5x fp32, within a few 8-bit levels
        return Precision(None, "auto: no native bf16 on this CPU; int8 hidden layers run ~1.5x fp32", int8=True,
                         auto=True)
    return Precision(None, f"auto: no native bf16 on this {kind} (bf16 would be emulated, slower than fp32)",
                     auto=True)
