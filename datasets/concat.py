"""Several datasets one after the other (e.g. T91 + BSD200), built from their specs."""
from typing import Any, Dict, List

from torch.utils.data import ConcatDataset

from datasets.registry import make, register
from utils.errors import UserError


@register('concat')
class Concat(ConcatDataset):
    """The items of every dataset of `datasets` (a list of {name, args} specs), in order."""

    def __init__(self, datasets: List[Dict[str, Any]]):
        if not isinstance(datasets, list) or not datasets:
            raise UserError("concat needs 'datasets': a non-empty list of {name, args} specs")
        super().__init__([make(spec) for spec in datasets])
