"""A model's data normalisation (the configs' data_norm): (v - sub) / div on inputs and targets.

data_norm = {'inp': {'sub': [..], 'div': [..]}, 'gt': {'sub': [..], 'div': [..]}}, each list of 1
value (all channels) or 3 (R, G, B). The model sees normalised LR images and predicts normalised
colours; every user of a model (training, evaluation, demo, inference) goes through one DataNorm.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from utils.errors import UserError

Values = Tuple[float, ...]


def _values(node: Any, where: str, key: str) -> Values:
    """1 or 3 finite numbers of data_norm.<part>.<key>; div without zeros."""
    v = node.get(key) if isinstance(node, Mapping) else None
    if not (isinstance(v, (list, tuple)) and len(v) in (1, 3)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise UserError(f"{where}.{key} must be a list of 1 or 3 numbers, got {v!r}")
    if key == 'div' and any(x == 0 for x in v):
        raise UserError(f"{where}.div must not contain 0")
    return tuple(float(x) for x in v)


@dataclass(frozen=True)
class DataNorm:
    """Per-channel (or shared) sub / div of a model's inputs ('inp') and outputs ('gt')."""
    inp_sub: Values
    inp_div: Values
    gt_sub: Values
    gt_div: Values
    # float32 (as the authors' torch.FloatTensor) copies per device, made on first use
    _tensors: Dict[Tuple[str, str], torch.Tensor] = field(default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def from_mapping(cls, data_norm: Any, where: str = 'data_norm') -> 'DataNorm':
        """DataNorm of a data_norm mapping; a malformed one is a UserError naming `where`."""
        if not isinstance(data_norm, Mapping):
            raise UserError(f"{where} must be a mapping with 'inp' and 'gt', got {data_norm!r}")
        parts = {}
        for part in ('inp', 'gt'):
            node = data_norm.get(part)
            if not isinstance(node, Mapping):
                raise UserError(f"{where}.{part} must be a mapping with 'sub' and 'div', got {node!r}")
            parts[part] = (_values(node, f"{where}.{part}", 'sub'), _values(node, f"{where}.{part}", 'div'))
        return cls(parts['inp'][0], parts['inp'][1], parts['gt'][0], parts['gt'][1])

    @classmethod
    def uniform(cls, sub: float, div: float) -> 'DataNorm':
        """The same sub / div for inputs and outputs on every channel."""
        return cls((float(sub),), (float(div),), (float(sub),), (float(div),))

    def to_mapping(self) -> Dict[str, Dict[str, list]]:
        """The data_norm mapping (plain lists: checkpoints and configs store it as is)."""
        return {'inp': {'sub': list(self.inp_sub), 'div': list(self.inp_div)},
                'gt': {'sub': list(self.gt_sub), 'div': list(self.gt_div)}}

    def describe(self) -> str:
        """One line for the log: inp sub/div, gt sub/div."""
        def fmt(v: Values) -> str:
            return ','.join(f'{x:g}' for x in v)
        return (f"inp sub {fmt(self.inp_sub)} div {fmt(self.inp_div)}, "
                f"gt sub {fmt(self.gt_sub)} div {fmt(self.gt_div)}")

    def _tensor(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        t = self._tensors.get(key)
        if t is None:
            t = self._tensors[key] = torch.tensor(getattr(self, name), dtype=torch.float32, device=device)
        return t

    def _shaped(self, name: str, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """The values of `name` shaped to broadcast along x's channel axis."""
        t = self._tensor(name, x.device)
        shape = [1] * x.dim()
        shape[channel_dim] = t.numel()
        return t.view(shape)

    def inp(self, x: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """Normalised LR images ((N, 3, h, w) or (3, h, w): channels at dim -3 by default)."""
        return (x - self._shaped('inp_sub', x, channel_dim)) / self._shaped('inp_div', x, channel_dim)

    def gt(self, x: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
        """Normalised target colours ((N, Q, 3): channels last by default)."""
        return (x - self._shaped('gt_sub', x, channel_dim)) / self._shaped('gt_div', x, channel_dim)

    def output(self, pred: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
        """Model predictions back to colours (not clamped); (N, Q, 3) by default, channel_dim -3 for images."""
        return pred * self._shaped('gt_div', pred, channel_dim) + self._shaped('gt_sub', pred, channel_dim)


# the authors' test.py with a config without data_norm: no normalisation
IDENTITY = DataNorm.uniform(0, 1)
# the authors' demo.py: inputs and outputs in [-1, 1]
DEMO = DataNorm.uniform(0.5, 0.5)


def data_norm_or(data_norm: Optional[Any], default: DataNorm, where: str = 'data_norm') -> DataNorm:
    """DataNorm of a mapping, or `default` when it is None."""
    return default if data_norm is None else DataNorm.from_mapping(data_norm, where)
