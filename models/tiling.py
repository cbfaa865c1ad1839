"""Running a convolutional encoder on overlapping spatial tiles with the untiled result."""
from typing import Callable, Optional

import torch
from torch import nn

# modules that keep every output pixel a function of a fixed neighbourhood of the same pixel
_POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Identity, nn.Dropout)


def receptive_radius(encoder: nn.Module) -> Optional[int]:
    """Upper bound on how far (pixels) an output pixel sees: the sum of every conv's reach.

    None if the encoder is not a stride-1, zero-padded conv net (tiles could not be exact).
    Summing over all convolutions over-counts parallel branches, which only makes tiles overlap more.
    """
    radius = 0
    for m in encoder.modules():
        if isinstance(m, nn.Conv2d):
            if any(s != 1 for s in m.stride) or m.padding_mode != 'zeros':
                return None
            radius += max(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))
        elif len(list(m.children())) == 0 and not isinstance(m, _POINTWISE):
            return None  # pooling, upsampling, normalisation over the image...: tiles would differ
    return radius


def activation_channels(encoder: nn.Module) -> int:
    """Rough upper bound on the float channels alive at once per pixel during a no-grad forward.

    Twice the widest convolution (input plus output) plus two of the widest outputs: covers
    EDSR's residual stream and block intermediates (~5 x 64 channels, estimate 384) and RDN's
    concatenations (~2100 channels around its 1024-channel fusion input, estimate 2304).
    """
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return 0
    return 2 * max(m.in_channels + m.out_channels for m in convs) + 2 * max(m.out_channels for m in convs)


def encode_tiled(encode: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor, tile: int,
                 halo: int) -> torch.Tensor:
    """encode(inp) assembled from tile x tile cores, each encoded with `halo` pixels of real context around it.

    Equals the untiled result up to float rounding when halo >= the receptive radius and encode
    keeps the spatial size (zero padding at the image border is the same in both).
    """
    n, _, h, w = inp.shape
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            ty0, tx0 = max(0, y0 - halo), max(0, x0 - halo)
            part = encode(inp[:, :, ty0:min(h, y1 + halo), tx0:min(w, x1 + halo)])
            if out is None:
                fmt = torch.channels_last if part.is_contiguous(memory_format=torch.channels_last) \
                    else torch.contiguous_format
                out = torch.empty((n, part.shape[1], h, w), dtype=part.dtype, device=part.device,
                                  memory_format=fmt)
            out[:, :, y0:y1, x0:x1] = part[:, :, y0 - ty0:y1 - ty0, x0 - tx0:x1 - tx0]
            del part
    return out
