"""Training's validation (training/loop.py validate): the authors' per-batch PSNR, independent of the world size."""
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

import datasets
import models
from evaluation.protocol import evaluate, liif_predictor, parse_eval_type
from tests.conftest import shared_path
from tests.helpers import (PER_CHANNEL_NORM, TINY_LIIF, manual_upscale, np_psnr, one_thread,  # noqa: F401
                           write_small_pairs)
from training.data import Loaders
from training.dist import DistInfo
from models.srno import authors_row_chunked
from training.loop import gt_image, preview, validate
from utils.coord import make_cell, make_coord
from utils.image import read_rgb_u8, u8_to_float
from utils.norm import DataNorm

CPU = torch.device('cpu')
pytestmark = pytest.mark.usefixtures('one_thread')


def _single() -> DistInfo:
    return DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU)


def test_validation_psnr_is_the_authors_per_batch_one_by_hand(tmp_path):
    """3 images in batches of 2: PSNR of the error pooled over (baby, bird), then of head, weighted 2 : 1."""
    lr_dir, hr_dir = write_small_pairs(shared_path('benchmark', 'Set5', 'HR'), tmp_path,
                                       names=('bird.png', 'head.png', 'baby.png'))
    ds = datasets.make({'name': 'sr-implicit-paired', 'args': {}},
                       args={'dataset': datasets.make({'name': 'paired-image-folders',
                                                       'args': {'root_path_1': lr_dir, 'root_path_2': hr_dir}})})
    model = models.make(TINY_LIIF).eval()
    norm = DataNorm.from_mapping(PER_CHANNEL_NORM)
    val = validate(model, DataLoader(ds, batch_size=2), norm, None, _single(), 2, 'benchmark-2')
    # by hand: each image's MSE (Y, shave 2) from the textbook PSNR, and its L1 of the raw prediction
    # against the normalised target; all images are 48 x 48, so a batch's pooled MSE is the mean of its MSEs
    mses, l1s = [], []
    coord = make_coord((48, 48)).unsqueeze(0)
    isub, idiv, gsub, gdiv = (np.array(PER_CHANNEL_NORM[p][k], dtype=np.float32)
                              for p in ('inp', 'gt') for k in ('sub', 'div'))
    for name in ('baby.png', 'bird.png', 'head.png'):
        lr = read_rgb_u8(os.path.join(lr_dir, name)).permute(1, 2, 0).numpy()
        hr = u8_to_float(read_rgb_u8(os.path.join(hr_dir, name))).numpy()
        mses.append(10 ** (-np_psnr(manual_upscale(model, lr, (48, 48), PER_CHANNEL_NORM), hr, shave=2, y=True) / 10))
        inp = torch.from_numpy(((lr / 255 - isub) / idiv).astype(np.float32).transpose(2, 0, 1)).unsqueeze(0)
        with torch.no_grad():
            raw = model(inp, coord, make_cell(coord, (48, 48)))[0].numpy()
        l1s.append(np.abs(raw - (hr.transpose(1, 2, 0).reshape(-1, 3) - gsub) / gdiv).mean())
    per_batch = (2 * -10 * np.log10((mses[0] + mses[1]) / 2) + -10 * np.log10(mses[2])) / 3
    assert val['val_psnr'] == pytest.approx(per_batch, abs=1e-4)
    assert val['val_loss'] == pytest.approx((2 * (l1s[0] + l1s[1]) / 2 + l1s[2]) / 3, rel=1e-5)
    # not the per-image mean of evaluation (which the hand computation above also is not)
    per_image = float(np.mean(-10 * np.log10(mses)))
    ref = evaluate(liif_predictor(model, norm, None), DataLoader(ds, batch_size=1), parse_eval_type('benchmark-2'), CPU)
    assert ref['psnr'] == pytest.approx(per_image, abs=1e-4)
    assert abs(val['val_psnr'] - per_image) > 0.05


def _val_cfg() -> dict:
    """Set5 crops twice over: once as sampled queries (no eval_type), once as whole grids (benchmark-3)."""
    def section(**wrapper):
        return {'dataset': {'name': 'image-folder', 'args': {'root_path': shared_path('benchmark', 'Set5', 'HR'),
                                                             'cache': 'in_memory'}},
                'wrapper': {'name': 'sr-implicit-downsampled', 'args': {'inp_size': 8, 'scale_max': 4, **wrapper}},
                'batch_size': 4}
    train = section(sample_q=16)
    train['dataset']['args']['first_k'] = 1
    return {'seed': 0, 'num_workers': 0, 'train_dataset': train,
            'sampled': section(sample_q=64), 'whole': section(scale_min=3, scale_max=3)}


def _validations(info: DistInfo, cfg: dict) -> dict:
    """val_psnr / val_loss of both validation sets on this process's share."""
    torch.manual_seed(0)
    model = models.make(TINY_LIIF)
    norm = DataNorm.from_mapping(PER_CHANNEL_NORM)
    out = {}
    for key, eval_type in (('sampled', None), ('whole', 'benchmark-3')):
        loaders = Loaders({**cfg, 'val_dataset': cfg[key]}, info)
        out[key] = validate(model, loaders.val, norm, None, info, cfg[key]['batch_size'], eval_type)
    return out


def _ddp_worker(rank: int, world: int, folder: str, cfg: dict) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    dist.init_process_group('gloo', init_method=f"file://{os.path.join(folder, 'rendezvous')}",
                            rank=rank, world_size=world)
    try:
        res = _validations(DistInfo(rank, world, rank, world, CPU), cfg)
        with open(os.path.join(folder, f'rank{rank}.json'), 'w') as f:
            json.dump(res, f)
    finally:
        dist.destroy_process_group()


def test_validation_does_not_depend_on_the_number_of_processes(tmp_path):
    """5 samples in batches of 4 on one process, of 2 (3 + 2 samples) on each of two gloo processes."""
    cfg = _val_cfg()
    single = _validations(_single(), cfg)
    # fork, as DataLoader workers (one thread each): spawn re-imports torch per process, ~10 s on a busy machine
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path), cfg), nprocs=2, join=True, start_method='fork')
    for rank in (0, 1):
        with open(tmp_path / f'rank{rank}.json') as f:
            two = json.load(f)
        for key in ('sampled', 'whole'):
            assert two[key]['val_psnr'] == pytest.approx(single[key]['val_psnr'], abs=1e-6), (rank, key)
            assert two[key]['val_loss'] == pytest.approx(single[key]['val_loss'], abs=1e-7), (rank, key)


TINY_SRNO = {'name': 'sronet', 'args': {'encoder_spec': {'name': 'edsr-baseline', 'args': {
    'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}, 'width': 16, 'blocks': 4}}


def _grid_set(**args):
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': shared_path('benchmark', 'Set5', 'HR'),
                                                             'cache': 'in_memory'}})
    ds = datasets.make({'name': 'sr-implicit-downsampled-fast', 'args': args}, args={'dataset': folder})
    ds.reseed(0)
    return ds


def test_grid_validation_with_eval_bsize_is_the_authors_row_chunks():
    """SRNO samples (N, 3, 8, 8) in batches of 2: eval_bsize 3 runs rows 0-2, 3-5, 6-7 as separate calls."""
    ds = _grid_set(inp_size=8, scale_min=2, scale_max=3)
    torch.manual_seed(0)
    model = models.make(TINY_SRNO).eval()
    norm = DataNorm.from_mapping(PER_CHANNEL_NORM)
    val = validate(model, DataLoader(ds, batch_size=2), norm, None, _single(), 2, None, eval_bsize=3)
    gsub, gdiv = (torch.tensor(PER_CHANNEL_NORM['gt'][k]).view(1, 3, 1, 1) for k in ('sub', 'div'))
    psnrs, sizes, l1s = [], [], []
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=2):
            pred = authors_row_chunked(model, norm.inp(batch['inp']), batch['coord'], batch['cell'], 3)
            mse = ((pred * gdiv + gsub).clamp(0, 1) - batch['gt']).pow(2).mean().item()
            psnrs.append(-10 * np.log10(mse))
            l1s.append((pred - (batch['gt'] - gsub) / gdiv).abs().mean().item())
            sizes.append(len(pred))
    assert val['val_psnr'] == pytest.approx(np.average(psnrs, weights=sizes), abs=1e-5)
    assert val['val_loss'] == pytest.approx(np.average(l1s, weights=sizes), abs=1e-7)
    one_call = validate(model, DataLoader(ds, batch_size=2), norm, None, _single(), 2, None)
    assert abs(one_call['val_psnr'] - val['val_psnr']) > 1e-4


def test_grid_preview_is_the_one_call_output():
    sample = _grid_set(inp_size=6, scale_min=3, scale_max=3).full_grid()[0]
    assert sample['coord'].shape == (18, 18, 2)
    torch.manual_seed(0)
    model = models.make(TINY_SRNO).eval()
    norm = DataNorm.from_mapping(PER_CHANNEL_NORM)
    with torch.no_grad():
        want = model(norm.inp(sample['inp'])[None], sample['coord'][None], sample['cell'][None])[0]
    got = preview(model, sample, norm, None, CPU)
    assert (got - norm.output(want, channel_dim=-3).clamp(0, 1)).abs().max() <= 1e-6
    assert torch.equal(gt_image(sample), sample['gt'])
