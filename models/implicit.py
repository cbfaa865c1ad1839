"""What LIIF and MetaSR share: an encoder whose feature map is kept for queries at any coordinate."""
from typing import Optional

import torch
from torch import nn

from models import fast_query


def encoder_input(inp: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """inp in the memory format the encoder should run in (channels_last: ~1.5-3x faster CPU convs)."""
    return inp.contiguous(memory_format=torch.channels_last) if channels_last and inp.dim() == 4 else inp


class ImplicitSR(nn.Module):
    """gen_feat(inp) encodes once; query_rgb(coord, cell) predicts RGB at coordinates; forward does both.

    Runtime switches (plain attributes, not constructor args, so checkpoints are unaffected):
    query_mode 'fast' (default; models/fast_query.py) or 'reference' (the authors' computation);
    channels_last (default True) runs the encoder in channels_last memory format.
    """

    query_mode = 'fast'
    channels_last = True

    def __init__(self):
        super().__init__()
        self.feat: Optional[torch.Tensor] = None
        self._codes = fast_query.CodeTable()

    def gen_feat(self, inp: torch.Tensor) -> torch.Tensor:
        """Encode inp (N, 3, h, w) and keep the feature map for the following queries."""
        self._codes.clear()
        self.feat = self.encoder(encoder_input(inp, self.channels_last))
        return self.feat

    def query_rgb(self, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predict (N, Q, 3) at coord (N, Q, 2) with query cells (N, Q, 2) from the last gen_feat."""
        raise NotImplementedError

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode inp and query it: (N, Q, 3)."""
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)
