"""torch.autocast from a config-style amp name ('bf16' / 'fp16' / None)."""
import contextlib
from typing import Optional

import torch

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def autocast(device: torch.device, amp: Optional[str]) -> contextlib.AbstractContextManager:
    """torch.autocast for amp in AMP_DTYPES on `device`, or a no-op context for None."""
    if amp is None:
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)} or None, not {amp!r}")
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])
