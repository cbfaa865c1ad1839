"""The paper's evaluation protocol (LIIF.md): test data from a config, whole-image queries, PSNR / SSIM.

eval_type 'div2k-S': PSNR on RGB, shave S + 6; 'benchmark-S': PSNR on Y, shave S; none: RGB, no
shave. SSIM (optional) is always on Y with the same shave. The output is clamped to [0, 1] and not
rounded to 8 bits. Scores are averaged over images. Training's validation scores its samples with
the same Protocol (query_squared_error) but, as the authors logged it, pools the error over each
validation batch before taking the PSNR (batched_psnr).
"""
import copy
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import datasets
from datasets.image_folder import list_images
from datasets.matlab_lr import ensure_matlab_lr
from utils.errors import UserError
from utils.imresize import imresize
from inference.bounded import output_grid, upscale
from utils.metrics import psnr, squared_error, ssim
from models.srno import SRNO, authors_row_chunked
from utils.norm import IDENTITY, DataNorm
from utils.testtime import NONE as NO_TEST_TIME, TestTime

log = logging.getLogger(__name__)

DEFAULT_ROOT = './load'
Predictor = Callable[[torch.Tensor, Tuple[int, int]], torch.Tensor]


@dataclass(frozen=True)
class Protocol:
    """How outputs are scored: 'div2k', 'benchmark' or 'plain', at an integer scale (0 if unknown)."""
    kind: str
    scale: int

    @property
    def shave(self) -> int:
        """Border pixels ignored on each side."""
        return {'div2k': self.scale + 6, 'benchmark': self.scale}.get(self.kind, 0)

    @property
    def y_channel(self) -> bool:
        """Whether PSNR is computed on luminance."""
        return self.kind == 'benchmark'

    def describe(self) -> str:
        """One line for the log and the tables."""
        return f"PSNR on {'Y' if self.y_channel else 'RGB'}, shave {self.shave} px"

    def psnr(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """PSNR (N,) of [0, 1] images (N, 3, H, W) under this protocol: Y or RGB, shaved."""
        return psnr(pred, gt, self.shave, self.y_channel)


def parse_eval_type(eval_type: Optional[str]) -> Protocol:
    """Protocol of an eval_type string 'div2k-S' / 'benchmark-S' (S a positive integer), or none."""
    if eval_type is None:
        return Protocol('plain', 0)
    m = re.fullmatch(r'(div2k|benchmark)-(\d+)', str(eval_type))
    if not m or int(m.group(2)) < 1:
        raise UserError(f"eval_type must be 'div2k-S' or 'benchmark-S' with an integer scale S, not {eval_type!r}")
    return Protocol(m.group(1), int(m.group(2)))


def parse_root_override(text: str) -> Tuple[str, str]:
    """'OLD=NEW' -> (OLD, NEW); a bare 'NEW' replaces the configs' './load'."""
    old, sep, new = text.partition('=')
    if not sep:
        old, new = DEFAULT_ROOT, text
    if not old or not new:
        raise UserError(f"--data-root takes NEW or OLD=NEW, not {text!r}")
    return old.rstrip('/') or '/', new


def apply_root_overrides(spec: Any, overrides: Sequence[Tuple[str, str]]) -> Any:
    """Copy of a dataset spec whose path arguments starting with an OLD prefix start with NEW instead (first match wins)."""
    def fix(value: str) -> str:
        for old, new in overrides:
            if value == old or value.startswith(old + '/'):
                return new.rstrip('/') + value[len(old):] if value != old else new
        return value

    def walk(node: Any, key: str = '') -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str) and ('path' in key or 'root' in key or 'file' in key):
            return fix(node)
        return node

    return walk(copy.deepcopy(spec))


def _with_generated_lr(dataset_spec: Dict[str, Any], protocol: Protocol, lr_cache: str) -> Dict[str, Any]:
    """A paired spec whose missing LR folder (root_path_1) is replaced by MATLAB-bicubic LR made from HR."""
    args = dict(dataset_spec.get('args') or {})
    lr_root, hr_root = args.get('root_path_1'), args.get('root_path_2')
    if dataset_spec.get('name') != 'paired-image-folders' or not lr_root or os.path.isdir(lr_root) or not hr_root:
        return dataset_spec
    if not os.path.isdir(hr_root):  # the LR could be made, the HR cannot: name the folder that matters
        raise UserError(f"dataset folder not found: {hr_root}")
    scale = protocol.scale
    if not scale:
        m = re.search(r'[Xx](\d+)$', os.path.normpath(lr_root))
        if not m:
            raise UserError(f"LR folder {lr_root} not found, and no eval_type scale to generate it with")
        scale = int(m.group(1))
    names = list_images(hr_root, args.get('split_file'), args.get('split_key'), args.get('first_k'))
    args['root_path_1'] = ensure_matlab_lr(hr_root, scale, lr_cache, names, missing=lr_root)
    return {**dataset_spec, 'args': args}


def make_test_loader(test_spec: Dict[str, Any], protocol: Protocol, lr_cache: str,
                     overrides: Sequence[Tuple[str, str]] = ()) -> DataLoader:
    """DataLoader of a config's test_dataset {dataset, wrapper, batch_size}, roots overridden, missing LR generated."""
    if not isinstance(test_spec, dict) or 'dataset' not in test_spec or 'wrapper' not in test_spec:
        raise UserError("the config needs test_dataset: {dataset: {name, args}, wrapper: {name, args}}")
    spec = apply_root_overrides(test_spec, overrides)
    dataset_spec = _with_generated_lr(spec['dataset'], protocol, lr_cache)
    if dataset_spec is spec['dataset'] and dataset_spec.get('name') == 'paired-image-folders':
        log.info("LR: images of %s", (dataset_spec.get('args') or {}).get('root_path_1'))
    dataset = datasets.make(spec['wrapper'], args={'dataset': datasets.make(dataset_spec)})
    if spec['wrapper'].get('name') == 'sr-implicit-downsampled':
        wargs = spec['wrapper'].get('args') or {}
        log.info("LR: HR images downscaled on the fly by x%s with %s bicubic", wargs.get('scale_min'),
                 wargs.get('resize', 'torch'))
    return DataLoader(dataset, batch_size=int(spec.get('batch_size', 1)), shuffle=False, num_workers=0)


def _as_norm(norm: Union[DataNorm, Mapping[str, Any], None]) -> DataNorm:
    """A predictor's normalisation: a DataNorm as given, a data_norm mapping read as one, None as none."""
    if norm is None:
        return IDENTITY
    return norm if isinstance(norm, DataNorm) else DataNorm.from_mapping(norm)


def liif_predictor(model: torch.nn.Module, norm: Union[DataNorm, Mapping[str, Any], None],
                   bsize: Optional[int], amp: Optional[str] = None,
                   test_time: TestTime = NO_TEST_TIME) -> Predictor:
    """Query a model on the whole target grid: [0, 1] LR in, clamped [0, 1] output.

    norm: the model's DataNorm (a data_norm mapping is read as one; None is the authors' test
    default, no normalisation). amp: 'bf16' / 'fp16' autocast, None for fp32 (the protocol's).
    test_time: cell enlargement / window padding (inference.bounded.choose_test_time).
    """
    norm = _as_norm(norm)

    def predict(inp: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        # bsize None: query chunks sized from inference.bounded's memory budget
        pred = upscale(model, norm.inp(inp), size, bsize or None, amp=amp, test_time=test_time)
        return norm.output(pred, channel_dim=-3).clamp_(0, 1)
    return predict


def row_chunked_predictor(model: torch.nn.Module, norm: Union[DataNorm, Mapping[str, Any], None], rows: int,
                          test_time: TestTime = NO_TEST_TIME) -> Predictor:
    """SRNO as its authors' test.py evaluates it with eval_bsize: blocks of `rows` grid rows as separate calls.

    The attention then sums over each block alone, so the output differs from the one-call (and the
    exact bounded) result; this reproduces the authors' numbers for configs that set eval_bsize.
    """
    if not isinstance(model, SRNO):
        raise UserError(f"the authors' row-chunked evaluation is SRNO's; this model is {type(model).__name__}, "
                        "whose chunks would not change its output")
    if rows < 1:
        raise UserError(f"row chunks must be positive, not {rows}")
    if test_time.window:
        raise UserError("the authors' row-chunked evaluation has no window padding: pass --window none")
    norm = _as_norm(norm)

    def predict(inp: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        n, in_hw = inp.shape[0], inp.shape[-2:]
        # no window padding here, so the model sees the input as it is
        grid = output_grid(in_hw, size, in_hw, test_time, inp.device)
        coord = torch.stack(torch.meshgrid(grid.rows, grid.cols, indexing='ij'), dim=-1).expand(n, *size, 2)
        cell = torch.tensor(grid.cell, device=inp.device).expand(n, 2)
        pred = authors_row_chunked(model, norm.inp(inp), coord, cell, rows)
        return norm.output(pred, channel_dim=-3).clamp_(0, 1)
    return predict


def bicubic_predictor() -> Predictor:
    """The baseline: MATLAB bicubic upsampling of the (float) LR, clamped to [0, 1]."""
    def predict(inp: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return imresize(inp, size=size).clamp_(0, 1)
    return predict


def grid_shape(coord: torch.Tensor) -> Tuple[int, int]:
    """(H, W) of a full row-major grid of pixel centres (Q, 2); a subsampled grid is a UserError."""
    w = int((coord[:, 0] == coord[0, 0]).sum())
    h = coord.shape[0] // w
    if h * w != coord.shape[0] or not bool((coord[w - 1::w, 1] == coord[w - 1, 1]).all()):
        raise UserError("the queries are not a whole H x W grid: the wrapper must return every HR pixel "
                        "(no sample_q)")
    return h, w


def query_image(values: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Per-query colours (N, Q, C) of a full grid `coord` (N, Q, 2) as images (N, C, H, W)."""
    h, w = grid_shape(coord[0])
    return values.reshape(values.shape[0], h, w, -1).permute(0, 3, 1, 2)


def _query_images(pred: torch.Tensor, gt: torch.Tensor, coord: torch.Tensor, protocol: Protocol
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-query colours pred / gt (N, Q, 3) laid out as the images (N, 3, H, W) the protocol scores."""
    if protocol.kind == 'plain':
        # one column of Q pixels: RGB and no shave need no image layout
        return pred.transpose(1, 2).unsqueeze(-1), gt.transpose(1, 2).unsqueeze(-1)
    return query_image(pred, coord), query_image(gt, coord)


def query_psnr(pred: torch.Tensor, gt: torch.Tensor, coord: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    """PSNR (N,) of per-query [0, 1] colours pred / gt (N, Q, 3) at coord (N, Q, 2) under `protocol`.

    'plain' scores the queries as they are (any subset of pixels); div2k / benchmark need the whole
    grid, to shave the border.
    """
    return protocol.psnr(*_query_images(pred, gt, coord, protocol))


def query_squared_error(pred: torch.Tensor, gt: torch.Tensor, coord: torch.Tensor, protocol: Protocol
                        ) -> Tuple[torch.Tensor, int]:
    """Per sample, the float64 sum of squared errors (N,) that query_psnr scores, and the values it sums."""
    return squared_error(*_query_images(pred, gt, coord, protocol), protocol.shave, protocol.y_channel)


def _pooled_batches(sums: Sequence[float], counts: Sequence[float], indices: Sequence[int],
                    batch_size: int) -> Tuple[List[float], List[int]]:
    """Per single-process batch (global index // batch_size): sum(sums) / sum(counts), and its sample count."""
    if not len(sums) == len(counts) == len(indices):
        raise ValueError(f"{len(sums)} sums, {len(counts)} counts and {len(indices)} indices")
    if not indices:
        raise ValueError("no samples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    order = sorted(range(len(indices)), key=lambda i: indices[i])
    if [indices[i] for i in order] != list(range(len(indices))):
        raise ValueError("the indices must be 0 .. N-1, each once")
    means, sizes = [], []
    for start in range(0, len(order), batch_size):
        members = order[start:start + batch_size]
        # fsum: exact, so the figure does not depend on the order the ranks delivered the samples in
        means.append(math.fsum(sums[i] for i in members) / math.fsum(counts[i] for i in members))
        sizes.append(len(members))
    return means, sizes


def batched_psnr(per_sample_sse: Sequence[float], counts: Sequence[float], indices: Sequence[int],
                 batch_size: int) -> float:
    """The authors' validation PSNR for any world size: PSNR of each batch's pooled MSE, batch-weighted mean.

    Sample k (indices[k], its place in the validation set) has squared-error sum per_sample_sse[k]
    over counts[k] values. The samples are regrouped into the batches one process would have
    loaded (index // batch_size); each batch scores -10 log10 of the MSE pooled over its samples,
    and the batch PSNRs are averaged weighted by batch size. This reproduces the authors' training
    log exactly, whichever ranks held which samples.
    """
    mses, sizes = _pooled_batches(per_sample_sse, counts, indices, batch_size)
    psnrs = [math.inf if mse == 0 else -10 * math.log10(mse) for mse in mses]
    return math.fsum(p * n for p, n in zip(psnrs, sizes)) / sum(sizes)


def batched_mean(per_sample_sums: Sequence[float], counts: Sequence[float], indices: Sequence[int],
                 batch_size: int) -> float:
    """Mean of sums / counts pooled per single-process batch (index // batch_size), batch-weighted (as batched_psnr)."""
    means, sizes = _pooled_batches(per_sample_sums, counts, indices, batch_size)
    return math.fsum(m * n for m, n in zip(means, sizes)) / sum(sizes)


@dataclass(frozen=True)
class ImageScore:
    """One evaluated image, as `evaluate` scored it: its place in the loader, LR input, output, HR, scores."""
    index: int
    inp: torch.Tensor
    pred: torch.Tensor
    gt: torch.Tensor
    psnr: float
    ssim: Optional[float]


@torch.inference_mode()
def evaluate(predict: Predictor, loader: DataLoader, protocol: Protocol, device: torch.device,
             with_ssim: bool = False, desc: str = 'eval',
             on_image: Optional[Callable[[ImageScore], None]] = None) -> Dict[str, float]:
    """Mean PSNR (and SSIM) over the loader's images: {'psnr', 'ssim'?, 'images'}; on_image sees each one."""
    psnrs: List[float] = []
    ssims: List[float] = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
        inp = batch['inp'].to(device)
        gt = query_image(batch['gt'].to(device), batch['coord'])
        pred = predict(inp, tuple(gt.shape[-2:]))
        first = len(psnrs)
        psnrs += protocol.psnr(pred, gt).tolist()
        if with_ssim:
            ssims += ssim(pred, gt, protocol.shave).tolist()
        if on_image is not None:
            for k in range(pred.shape[0]):
                i = first + k
                on_image(ImageScore(i, inp[k], pred[k], gt[k], psnrs[i], ssims[i] if with_ssim else None))
    if not psnrs:
        raise UserError("the test dataset holds no images")
    out = {'psnr': sum(psnrs) / len(psnrs), 'images': len(psnrs)}
    if with_ssim:
        out['ssim'] = sum(ssims) / len(ssims)
    return out
