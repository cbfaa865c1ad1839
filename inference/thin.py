"""Thin inputs (fewer than THIN_SIDE pixels tall or wide): upscaled as part of an edge-replicated image.

A deviation from the authors' code, for such inputs only. LIIF's encoder zero-pads every
convolution; in an image one pixel tall that padding is most of what each pixel sees, so colours
wash out: a uniform red (200, 10, 10) line 40 px long came out (165, 44, 41) at its centre and up to
88 levels off at x4 with the bundled model. Here the image is first padded by replicating its edge
pixels PAD px outward on the thin sides, and the model is queried only where the original pixels lie
(coordinates and cells scaled into the padded frame), so the output grid is unchanged: the same
line comes out (199, 10, 9), at most 1.9 levels off. Padding the encoder's input and cropping its
features back (keeping the zero border for LIIF's feature unfolding) made it worse, (153, 72, 75):
the model has learnt what a zero border next to its features means. Measured errors stop falling
at PAD = 8; inputs THIN_SIDE px or more on both sides run exactly as the authors' code does.
"""
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

THIN_SIDE = 4
PAD = 8


class OriginalFrameQueries:
    """A model fed an edge-padded image, queried in the coordinates of the image before padding.

    Everything but query, query_int8 and query_grid_bands (encode, encoder, feat, the code table...) is the wrapped model's own.
    """

    def __init__(self, model: Any, factors: Tuple[float, float]):
        object.__setattr__(self, 'inner', model)
        object.__setattr__(self, 'factors', factors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor] = None,
              **options: Any) -> torch.Tensor:
        """The wrapped model's query at the same points of the picture: coordinates scaled into the padded frame."""
        f = coord.new_tensor(self.factors)
        return self.inner.query(feat, coord * f, None if cell is None else cell * f, **options)

    def query_int8(self, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor] = None,
                   **options: Any) -> torch.Tensor:
        """The wrapped model's int8 query at the same points of the picture (scaled as query)."""
        f = coord.new_tensor(self.factors)
        return self.inner.query_int8(feat, coord * f, None if cell is None else cell * f, **options)

    def query_grid_bands(self, state: Any, rows: torch.Tensor, cols: torch.Tensor, cell: torch.Tensor,
                         band_rows: int) -> Any:
        """The wrapped model's grid bands at the same points of the picture (non-pointwise models)."""
        f = cell.new_tensor(self.factors)
        return self.inner.query_grid_bands(state, rows * f[0], cols * f[1], cell * f, band_rows)


@dataclass
class PaddedInput:
    """An edge-padded image and the model view that queries it at the original pixels."""
    rgb: torch.Tensor            # (C, h + 2 * rows, w + 2 * cols)
    model: OriginalFrameQueries
    rows: int                    # replicated on top and bottom
    cols: int                    # replicated left and right


def pad_thin_input(model: Any, rgb: torch.Tensor) -> Optional[PaddedInput]:
    """The padded image and model view for an rgb (C, h, w) thinner than THIN_SIDE; None for other images."""
    h, w = rgb.shape[-2:]
    rows = PAD if h < THIN_SIDE else 0
    cols = PAD if w < THIN_SIDE else 0
    if not (rows or cols):
        return None
    padded = F.pad(rgb.unsqueeze(0), (cols, cols, rows, rows), mode='replicate')[0]
    # padding is symmetric, so the centre stays at 0 and coordinates only shrink by h / (h + 2 * rows)
    factors = (h / (h + 2 * rows), w / (w + 2 * cols))
    return PaddedInput(padded, OriginalFrameQueries(model, factors), rows, cols)
