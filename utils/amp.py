"""Reduced precision: torch.autocast from an amp name ('bf16' / 'fp16' / None), and the --precision choice."""
import contextlib
import dataclasses
from typing import Optional

import torch

from utils.errors import UserError

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
PRECISIONS = ('fp32', 'bf16', 'fp16', 'auto')
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
    """What --precision resolved to: amp (None = fp32, else a key of AMP_DTYPES) and why, for the log."""
    amp: Optional[str]
    reason: str

    @property
    def name(self) -> str:
        """'fp32', 'bf16' or 'fp16'."""
        return self.amp or 'fp32'


def resolve_precision(choice: str, device: torch.device) -> Precision:
    """--precision fp32|bf16|fp16|auto on `device` -> Precision; fp16 on a CPU is a UserError (slow)."""
    kind = torch.device(device).type
    if choice not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {choice!r}")
    if choice == 'fp16' and kind == 'cpu':
        # measured (benchmarks/precision_accuracy.py): accurate, but ~6.7x slower than fp32 without fp16 units
        raise UserError("--precision fp16 is for CUDA: on the CPU it is several times slower than fp32; "
                        "use fp32 or bf16")
    if choice == 'fp32':
        return Precision(None, "asked for")
    if choice in AMP_DTYPES:
        return Precision(choice, "asked for")
    if kind == 'cuda':
        return Precision('bf16', "auto: CUDA")
    native = cpu_native_bf16() if kind == 'cpu' else None
    if native:
        return Precision('bf16', f"auto: the CPU has native bf16 ({native})")
    return Precision(None, f"auto: no native bf16 on this {kind} (bf16 would be emulated, slower than fp32)")
