"""Test-time options of arbitrary-scale SR methods (LTE.md, 'Test-time protocol of the authors').

cell_max_scale: beyond the training range the query cell is enlarged by max(scale / cell_max_scale, 1)
(LTE, SRNO and LMF evaluate with 4; LIIF does not). window: the input is mirrored (edge repeated)
at the bottom and right up to the next multiple of `window` plus one whole window, and the output
cropped back (how the authors evaluate SwinIR encoders, window 8).
"""
import dataclasses
from typing import Optional

import torch

from utils.errors import UserError

# LTE, SRNO and LMF all train on x1-x4 and evaluate beyond it with the cell enlarged (LTE.md, test-time protocol)
CELL_MAX_SCALE = 4


@dataclasses.dataclass(frozen=True)
class TestTime:
    """Which test-time options a run applies: cell enlargement beyond a scale, window padding."""
    __test__ = False  # not a pytest test class despite its name
    cell_max_scale: Optional[float] = None
    window: Optional[int] = None

    def __post_init__(self):
        if self.cell_max_scale is not None and not self.cell_max_scale > 0:
            raise UserError(f"cell_max_scale must be positive, not {self.cell_max_scale}")
        if self.window is not None and (int(self.window) != self.window or self.window < 1):
            raise UserError(f"window must be a positive integer, not {self.window}")

    def cell_factor(self, scale: float) -> float:
        """What the query cell is multiplied by at this scale: max(scale / cell_max_scale, 1), or 1 when off."""
        if self.cell_max_scale is None:
            return 1.0
        return max(scale / self.cell_max_scale, 1.0)

    def describe(self) -> str:
        """One line for the log."""
        parts = [f"cell x max(scale/{self.cell_max_scale:g}, 1)" if self.cell_max_scale else '',
                 f"window padding {self.window}" if self.window else '']
        return ', '.join(p for p in parts if p) or 'none'


NONE = TestTime()


def window_pad_amount(n: int, window: int) -> int:
    """Rows (or columns) the authors append: (n // window + 1) * window - n, always 1..window."""
    return (n // window + 1) * window - n


def mirror_pad(inp: torch.Tensor, window: int) -> torch.Tensor:
    """inp (N, C, h, w) with its mirror image (edge repeated) appended below and right to whole windows plus one."""
    h, w = inp.shape[-2:]
    hp, wp = window_pad_amount(h, window), window_pad_amount(w, window)
    if hp > h or wp > w:
        # one flip supplies at most h rows: a window larger than the image would need a second one
        raise UserError(f"window padding {window} needs an input of at least {window} x {window} px, "
                        f"not {h} x {w}")
    out = torch.cat([inp, inp.flip(-2)], dim=-2)[..., :h + hp, :]
    return torch.cat([out, out.flip(-1)], dim=-1)[..., :w + wp]


def merge(base: TestTime, cell_max_scale: Optional[str] = None, window: Optional[str] = None) -> TestTime:
    """base with the values of flags/config keys given as text or numbers ('none'/'off' switches one off)."""
    def parse(value, kind, name):
        if value is None:
            return getattr(base, name)
        if str(value).strip().lower() in ('none', 'off', '0', 'false'):
            return None
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a number or 'none', not {value!r}") from None
    return TestTime(parse(cell_max_scale, float, 'cell_max_scale'), parse(window, int, 'window'))


def add_arguments(parser) -> None:
    """--cell-max-scale and --window on an argparse parser (default: the model's recommendation)."""
    parser.add_argument('--cell-max-scale', default=None, metavar='S|none',
                        help="enlarge the query cell by max(scale / S, 1) beyond the training range (LTE, SRNO "
                             "and LMF are evaluated with 4); default: what the model's authors use (none for "
                             "LIIF and MetaSR); 'none' switches it off")
    parser.add_argument('--window', default=None, metavar='N|none',
                        help="mirror-pad the input to whole N x N windows plus one and crop the output (the "
                             "authors' SwinIR evaluation, 8); default: what the model's authors use")


def flag_values(args) -> dict:
    """The test-time values given on the command line (None where a flag was not given)."""
    return {'cell_max_scale': args.cell_max_scale, 'window': args.window}
