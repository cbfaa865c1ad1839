"""LIIF: a feature map plus a shared MLP that predicts RGB at any continuous coordinate."""
from typing import Any, Dict, Optional

import torch

from models import fast_query
from models.implicit import ImplicitSR
from models.registry import make, register
from models.sampling import BORDER_EPS, corner_shifts, corner_weights, sample_corners, sample_nearest, unfold3x3
from utils.coord import make_coord


@register('liif')
class LIIF(ImplicitSR):
    """Local implicit image function (LIIF.md, 'The query function'); interface and switches as in ImplicitSR."""

    def __init__(self, encoder_spec: Dict[str, Any], imnet_spec: Optional[Dict[str, Any]] = None,
                 local_ensemble: bool = True, feat_unfold: bool = True, cell_decode: bool = True):
        super().__init__()
        self.local_ensemble = local_ensemble
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        self.encoder = make(encoder_spec)
        if imnet_spec is not None:
            in_dim = self.encoder.out_dim * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)
            self.imnet = make(imnet_spec, args={'in_dim': in_dim})
        else:
            self.imnet = None

    def has_fast_path(self) -> bool:
        """The fast path needs an MLP that is a plain Linear/ReLU stack."""
        return fast_query.mlp_layers(self.imnet) is not None

    def query_fast(self, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor],
                   table_mb: float) -> torch.Tensor:
        """query through the per-code table of the MLP's first layer (models/fast_query.py)."""
        return fast_query.liif_query(self, feat, coord, cell, table_mb)

    def has_int8_query(self) -> bool:
        """The int8 query is the fast path's with int8 hidden layers: the MLP needs one between its first and last."""
        return self.has_fast_path() and fast_query.Int8Layers.quantises(fast_query.mlp_layers(self.imnet)[1:])

    def query_int8(self, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor] = None,
                   table_mb: float = fast_query.DEFAULT_TABLE_MB) -> torch.Tensor:
        """The fast path with the hidden layers in dynamic int8 (models/fast_query.py, Int8Layers)."""
        if not self.has_int8_query():
            raise NotImplementedError("the int8 query needs a plain Linear/ReLU MLP with hidden layers")
        return fast_query.liif_query(self, feat, coord, cell, table_mb, int8=True)

    def query_reference(self, feat: torch.Tensor, coord: torch.Tensor,
                        cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """LIIF.md's query function: each corner's code, offset and cell through the whole MLP, then blended."""
        if self.imnet is None:
            return sample_nearest(feat, coord)
        codes = unfold3x3(feat) if self.feat_unfold else feat
        n, _, h, w = codes.shape
        hw = coord.new_tensor([h, w])
        # one pass per corner, stacked first: (P, N, Q, 2)
        chosen = (coord + corner_shifts(h, w, self.local_ensemble, coord).view(-1, 1, 1, 2)) \
            .clamp(-1 + BORDER_EPS, 1 - BORDER_EPS)
        centres = make_coord((h, w), flatten=False, device=feat.device).permute(2, 0, 1).expand(n, 2, h, w)
        rel = (coord - sample_corners(centres, chosen)) * hw
        parts = [sample_corners(codes, chosen), rel]
        if self.cell_decode:
            parts.append((cell * hw).expand_as(rel))
        preds = self.imnet(torch.cat(parts, dim=-1))
        return (preds * corner_weights(rel, self.local_ensemble).unsqueeze(-1)).sum(dim=0)
