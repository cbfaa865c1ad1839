"""The MetaSR baseline (Hu et al. 2019) as the LIIF paper re-implemented it (LIIF.md, 'Parts')."""
from typing import Any, Dict, Optional

import torch

from models import fast_query
from models.implicit import ImplicitSR
from models.registry import make, register
from models.sampling import BORDER_EPS, sample_nearest, unfold3x3
from utils.coord import make_coord


@register('metasr')
class MetaSR(ImplicitSR):
    """Meta-upscale: an MLP of (offset, scale) predicts per-query weights applied to the unfolded code.

    Interface and switches as in ImplicitSR.
    """

    def __init__(self, encoder_spec: Dict[str, Any]):
        super().__init__()
        self.encoder = make(encoder_spec)
        imnet_spec = {'name': 'mlp', 'args': {
            'in_dim': 3, 'out_dim': self.encoder.out_dim * 9 * 3, 'hidden_list': [256]}}
        self.imnet = make(imnet_spec)

    def has_fast_path(self) -> bool:
        """Always: the MLP is built here."""
        return True

    def query_fast(self, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor],
                   table_mb: float) -> torch.Tensor:
        """query with the MLP's last layer folded into a per-code table (models/fast_query.py)."""
        return fast_query.metasr_query(self, feat, coord, cell, table_mb)

    def query_reference(self, feat: torch.Tensor, coord: torch.Tensor,
                        cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A (9C x 3) weight matrix per query from its offset and scale, applied to its unfolded code."""
        codes = unfold3x3(feat)
        n, c9, h, w = codes.shape
        corner = coord - cell / 2  # the query pixel's top-left corner
        chosen = (corner + BORDER_EPS).clamp(-1 + BORDER_EPS, 1 - BORDER_EPS)
        # each code's own pixel corner: its centre less half a feature pixel
        code_corners = make_coord((h, w), flatten=False, device=feat.device) - coord.new_tensor([1 / h, 1 / w])
        code_corners = code_corners.permute(2, 0, 1).expand(n, 2, h, w)
        rel = (corner - sample_nearest(code_corners, chosen)) * coord.new_tensor([h / 2, w / 2])
        scale = cell[..., :1] * (h / 2)
        weights = self.imnet(torch.cat([rel, scale], dim=-1)).view(-1, c9, 3)
        # one (1 x 9C) @ (9C x 3) product per query with contiguous codes: the authors' summation order
        # (a strided view or matmul's broadcasting take other kernels: 1.05e-5 from their vectors, not 7.2e-6)
        code = sample_nearest(codes, chosen).contiguous().view(-1, 1, c9)
        return torch.bmm(code, weights).view(*coord.shape[:-1], 3)
