"""LIIF: a feature map plus a shared MLP that predicts RGB at any continuous coordinate."""
from typing import Any, Dict, Optional

import torch

from models import fast_query
from models.implicit import ImplicitSR
from models.registry import make, register
from models.sampling import sample_nearest, unfold3x3
from utils.coord import make_coord


@register('liif')
class LIIF(ImplicitSR):
    """Local implicit image function (LIIF.md, 'The query function'); switches as in ImplicitSR."""

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

    def query_rgb(self, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predict (N, Q, 3) at coord (N, Q, 2) with query cells (N, Q, 2) from the last gen_feat."""
        if fast_query.check_query_mode(self.query_mode) == 'fast' and fast_query.mlp_layers(self.imnet):
            return fast_query.liif_query(self, coord, cell)
        return self.query_reference(coord, cell)

    def query_reference(self, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query_rgb computed as the authors' code does (unfolded codes through the whole MLP)."""
        feat = self.feat
        if self.imnet is None:
            return sample_nearest(feat, coord)
        if self.feat_unfold:
            feat = unfold3x3(feat)

        if self.local_ensemble:
            vx_lst, vy_lst, eps_shift = [-1, 1], [-1, 1], 1e-6
        else:
            vx_lst, vy_lst, eps_shift = [0], [0], 0
        h, w = feat.shape[-2:]
        rx, ry = 2 / h / 2, 2 / w / 2
        feat_coord = make_coord((h, w), flatten=False, device=feat.device) \
            .permute(2, 0, 1).unsqueeze(0).expand(feat.shape[0], 2, h, w)

        preds, areas = [], []
        for vx in vx_lst:
            for vy in vy_lst:
                coord_ = coord.clone()
                coord_[:, :, 0] += vx * rx + eps_shift
                coord_[:, :, 1] += vy * ry + eps_shift
                coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
                q_feat = sample_nearest(feat, coord_)
                q_coord = sample_nearest(feat_coord, coord_)
                rel_coord = coord - q_coord
                rel_coord[:, :, 0] *= h
                rel_coord[:, :, 1] *= w
                inp = torch.cat([q_feat, rel_coord], dim=-1)
                if self.cell_decode:
                    rel_cell = cell.clone()
                    rel_cell[:, :, 0] *= h
                    rel_cell[:, :, 1] *= w
                    inp = torch.cat([inp, rel_cell], dim=-1)
                bs, q = coord.shape[:2]
                preds.append(self.imnet(inp.view(bs * q, -1)).view(bs, q, -1))
                areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)

        tot_area = torch.stack(areas).sum(dim=0)
        if self.local_ensemble:
            # each prediction is weighted by the area towards the diagonally opposite code
            areas = areas[::-1]
        ret = 0
        for pred, area in zip(preds, areas):
            ret = ret + pred * (area / tot_area).unsqueeze(-1)
        return ret
