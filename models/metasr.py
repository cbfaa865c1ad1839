"""The MetaSR baseline (Hu et al. 2019) as the LIIF paper re-implemented it."""
from typing import Any, Dict, Optional

import torch

from models import fast_query
from models.implicit import ImplicitSR
from models.registry import make, register
from models.sampling import sample_nearest, unfold3x3
from utils.coord import make_coord


@register('metasr')
class MetaSR(ImplicitSR):
    """Meta-upscale: an MLP of (offset, scale) predicts per-query weights applied to the unfolded code.

    Switches as in ImplicitSR (query_mode, channels_last).
    """

    def __init__(self, encoder_spec: Dict[str, Any]):
        super().__init__()
        self.encoder = make(encoder_spec)
        imnet_spec = {'name': 'mlp', 'args': {
            'in_dim': 3, 'out_dim': self.encoder.out_dim * 9 * 3, 'hidden_list': [256]}}
        self.imnet = make(imnet_spec)

    def query_rgb(self, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predict (N, Q, 3) at coord (N, Q, 2) with query cells (N, Q, 2) from the last gen_feat."""
        if fast_query.check_query_mode(self.query_mode) == 'fast':
            return fast_query.metasr_query(self, coord, cell)
        return self.query_reference(coord, cell)

    def query_reference(self, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query_rgb computed as the authors' code does (per-query weight matrices)."""
        feat = unfold3x3(self.feat)
        h, w = feat.shape[-2:]
        feat_coord = make_coord((h, w), flatten=False, device=feat.device)
        feat_coord[:, :, 0] -= (2 / h) / 2
        feat_coord[:, :, 1] -= (2 / w) / 2
        feat_coord = feat_coord.permute(2, 0, 1).unsqueeze(0).expand(feat.shape[0], 2, h, w)

        coord_ = coord.clone()
        coord_[:, :, 0] -= cell[:, :, 0] / 2
        coord_[:, :, 1] -= cell[:, :, 1] / 2
        coord_q = (coord_ + 1e-6).clamp(-1 + 1e-6, 1 - 1e-6)
        q_feat = sample_nearest(feat, coord_q)
        q_coord = sample_nearest(feat_coord, coord_q)

        rel_coord = coord_ - q_coord
        rel_coord[:, :, 0] *= h / 2
        rel_coord[:, :, 1] *= w / 2
        r_rev = cell[:, :, 0] * (h / 2)
        inp = torch.cat([rel_coord, r_rev.unsqueeze(-1)], dim=-1)

        bs, q = coord.shape[:2]
        weights = self.imnet(inp.view(bs * q, -1)).view(bs * q, feat.shape[1], 3)
        pred = torch.bmm(q_feat.contiguous().view(bs * q, 1, -1), weights)
        return pred.view(bs, q, 3)
