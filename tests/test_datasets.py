"""Datasets and wrappers: folders, caches, splits, and the LIIF samples (shapes, ranges, alignment)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import datasets
from datasets.downsample import downsample
from tests.conftest import shared_path
from utils.coord import make_coord
from utils.errors import UserError

DIHEDRAL = [(False, False, False), (True, False, False), (False, True, False), (True, True, False),
            (False, False, True), (True, False, True), (False, True, True), (True, True, True)]


def _save(folder, name, arr):
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(arr).save(os.path.join(folder, name))


def _position_image(h, w):
    """uint8 (h, w, 3) whose colour encodes the pixel position: R = row % 256, G = col % 256, B = high bits."""
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    return np.stack([r % 256, c % 256, r // 256 + 4 * (c // 256)], axis=-1).astype(np.uint8)


def _decode(rgb):
    v = (rgb * 255).round().long()
    return v[:, 0] + 256 * (v[:, 2] % 4), v[:, 1] + 256 * (v[:, 2] // 4)


def _query_pixels(coord, cell):
    """Integer pixel (row, col) of each query of a target whose pixel size is `cell`."""
    h, w = (2 / cell).round().long().tolist()
    i = ((coord[:, 0] + 1) * h - 1) / 2
    j = ((coord[:, 1] + 1) * w - 1) / 2
    assert torch.allclose(i, i.round(), atol=1e-3) and torch.allclose(j, j.round(), atol=1e-3)
    return i.round().long(), j.round().long(), h, w


def _one_dihedral_fits(i, j, rows, cols, n):
    """True when (rows, cols) = offset + one flip/transpose of the crop position (i, j) for all queries."""
    for hflip, vflip, dflip in DIHEDRAL:
        a, b = (j, i) if dflip else (i, j)  # undo the transpose last applied
        a = n - 1 - a if hflip else a
        b = n - 1 - b if vflip else b
        if len(set((rows - a).tolist())) == 1 and len(set((cols - b).tolist())) == 1:
            return True
    return False


@pytest.fixture
def position_folder(tmp_path):
    folder = tmp_path / 'pos'
    _save(folder, 'a.png', _position_image(300, 260))
    _save(folder, 'b.png', _position_image(200, 330))
    return str(folder)


def test_image_folder_uint8_first_k_repeat_split(tmp_path):
    root = shared_path('train', 'T91')
    ds = datasets.make({'name': 'image-folder', 'args': {'root_path': root, 'first_k': 3, 'repeat': 4}})
    assert len(ds) == 12
    img = ds[0]
    assert img.dtype == torch.uint8 and img.shape[0] == 3
    assert torch.equal(ds[3], img)  # repeat cycles over the same files
    names = sorted(os.listdir(root))
    split = tmp_path / 'split.json'
    split.write_text(json.dumps({'train': names[5:7], 'val': names[:1]}))
    tr = datasets.make({'name': 'image-folder', 'args': {'root_path': root, 'split_file': str(split),
                                                         'split_key': 'train', 'cache': 'in_memory'}})
    assert len(tr) == 2 and tr[1].dtype == torch.uint8
    assert torch.equal(tr[0], datasets.make({'name': 'image-folder', 'args': {'root_path': root}})[5])
    with pytest.raises(UserError, match='split'):
        datasets.make({'name': 'image-folder', 'args': {'root_path': root, 'split_file': str(split),
                                                        'split_key': 'test'}})


def test_bin_cache_matches_and_is_reused(tmp_path):
    src = shared_path('train', 'T91')
    root = tmp_path / 'imgs'
    root.mkdir()
    for n in sorted(os.listdir(src))[:2]:
        shutil.copy(os.path.join(src, n), root / n)
    plain = datasets.make({'name': 'image-folder', 'args': {'root_path': str(root)}})
    binned = datasets.make({'name': 'image-folder', 'args': {'root_path': str(root), 'cache': 'bin'}})
    cache = tmp_path / '_bin_imgs'
    files = sorted(os.listdir(cache))
    assert len(files) == 2 and all(f.endswith('.npy') for f in files)
    for k in range(2):
        assert binned[k].dtype == torch.uint8 and torch.equal(binned[k], plain[k])
    mtimes = [os.stat(cache / f).st_mtime_ns for f in files]
    datasets.make({'name': 'image-folder', 'args': {'root_path': str(root), 'cache': 'bin'}})
    assert [os.stat(cache / f).st_mtime_ns for f in files] == mtimes


def test_concat_and_paired(tmp_path):
    lr, hr = tmp_path / 'lr', tmp_path / 'hr'
    for k in range(3):
        _save(lr, f'{k}.png', np.full((4, 5, 3), k, np.uint8))
        _save(hr, f'{k}.png', np.full((8, 10, 3), k, np.uint8))
    cat = datasets.make({'name': 'concat', 'args': {'datasets': [
        {'name': 'image-folder', 'args': {'root_path': str(lr)}},
        {'name': 'image-folder', 'args': {'root_path': str(hr), 'repeat': 2}}]}})
    assert len(cat) == 9 and cat[2].shape == (3, 4, 5) and cat[3].shape == (3, 8, 10)
    pairs = datasets.make({'name': 'paired-image-folders', 'args': {'root_path_1': str(lr), 'root_path_2': str(hr)}})
    a, b = pairs[2]
    assert len(pairs) == 3 and int(a[0, 0, 0]) == int(b[0, 0, 0]) == 2
    with pytest.raises(UserError, match='concat'):
        datasets.make({'name': 'concat', 'args': {'datasets': []}})


@pytest.mark.parametrize('augment', [False, True])
def test_downsampled_queries_hit_their_hr_pixels(position_folder, augment):
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': position_folder, 'repeat': 5}})
    ds = datasets.make({'name': 'sr-implicit-downsampled', 'args': {
        'inp_size': 16, 'scale_min': 1.5, 'scale_max': 4, 'augment': augment, 'sample_q': 200}}, {'dataset': folder})
    ds.reseed(1)
    for idx in range(len(ds)):
        s = ds[idx]
        assert s['inp'].shape == (3, 16, 16) and s['coord'].shape == (200, 2)
        assert s['cell'].shape == (200, 2) and s['gt'].shape == (200, 3)
        assert s['coord'].abs().max() < 1 and s['inp'].min() >= 0 and s['inp'].max() <= 1
        cell = s['cell'][0]
        assert torch.all(s['cell'] == cell)
        i, j, h, w = _query_pixels(s['coord'], cell)
        assert h == w and 1.5 - 0.5 / 16 <= h / 16 <= 4 + 0.5 / 16
        rows, cols = _decode(s['gt'])
        if augment:
            assert _one_dihedral_fits(i, j, rows, cols, h)
        else:
            assert len(set((rows - i).tolist())) == 1 and len(set((cols - j).tolist())) == 1


def test_downsampled_input_is_the_downscaled_target_after_augmentation():
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': shared_path('benchmark', 'Set5', 'HR'),
                                                             'cache': 'in_memory'}})
    ds = datasets.make({'name': 'sr-implicit-downsampled', 'args': {'inp_size': 24, 'scale_max': 4, 'augment': True}},
                       {'dataset': folder})
    ds.reseed(3)
    for idx in range(len(ds)):
        s = ds[idx]
        h, w = (2 / s['cell'][0]).round().long().tolist()
        hr = s['gt'].view(h, w, 3).permute(2, 0, 1)
        # flips and transposes commute with the resize up to float rounding before 8-bit quantisation
        diff = (downsample(hr, (24, 24)) - s['inp']).abs()
        assert diff.max() <= 1 / 255 + 1e-6 and (diff > 1e-6).float().mean() <= 0.01  # measured: none differ
        assert not torch.equal(s['inp'], s['inp'].flip(-1))


def test_downsampled_full_image_and_small_images(tmp_path):
    _save(tmp_path / 's', 'x.png', _position_image(30, 40))
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': str(tmp_path / 's')}})
    full = datasets.make({'name': 'sr-implicit-downsampled', 'args': {'scale_min': 2.5}}, {'dataset': folder})[0]
    assert full['inp'].shape == (3, 12, 16) and full['gt'].shape == (30 * 40, 3)
    assert torch.allclose(full['cell'][0], torch.tensor([2 / 30, 2 / 40]))
    ds = datasets.make({'name': 'sr-implicit-downsampled', 'args': {'inp_size': 12, 'scale_max': 4}}, {'dataset': folder})
    with pytest.raises(UserError, match='cap_scale'):
        ds.reseed(0)
        for _ in range(20):
            ds[0]
    capped = datasets.make({'name': 'sr-implicit-downsampled', 'args': {'inp_size': 12, 'scale_max': 4,
                                                                       'cap_scale': True}}, {'dataset': folder})
    for epoch in range(20):
        capped.reseed(0, epoch)
        h = round(2 / capped[0]['cell'][0, 0].item())
        assert 12 <= h <= 30


@pytest.mark.parametrize('augment', [False, True])
def test_paired_crops_align(tmp_path, augment):
    rng = np.random.default_rng(0)
    for k in range(2):
        lr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        _save(tmp_path / 'lr', f'{k}.png', lr)
        _save(tmp_path / 'hr', f'{k}.png', lr.repeat(3, 0).repeat(3, 1))  # nearest x3: HR pixel -> LR pixel
    pairs = datasets.make({'name': 'paired-image-folders', 'args': {
        'root_path_1': str(tmp_path / 'lr'), 'root_path_2': str(tmp_path / 'hr'), 'repeat': 4}})
    ds = datasets.make({'name': 'sr-implicit-paired', 'args': {'inp_size': 8, 'augment': augment, 'sample_q': 100}},
                       {'dataset': pairs})
    ds.reseed(0)
    for idx in range(len(ds)):
        s = ds[idx]
        i, j, h, w = _query_pixels(s['coord'], s['cell'][0])
        assert (h, w) == (24, 24) and s['inp'].shape == (3, 8, 8)
        assert torch.equal(s['gt'], s['inp'][:, i // 3, j // 3].t())


def test_uniform_varied_sizes_flip_and_gt_resize(tmp_path):
    half = np.zeros((16, 16, 3), np.uint8)
    half[:, 8:] = 255  # bright right half: a flip shows on both images
    for k in range(5):
        _save(tmp_path / 'lr', f'{k}.png', half)
        _save(tmp_path / 'hr', f'{k}.png', half.repeat(8, 0).repeat(8, 1))
    pairs = datasets.make({'name': 'paired-image-folders', 'args': {'root_path_1': str(tmp_path / 'lr'),
                                                                    'root_path_2': str(tmp_path / 'hr')}})
    ds = datasets.make({'name': 'sr-implicit-uniform-varied', 'args': {
        'size_min': 16, 'size_max': 128, 'augment': True, 'sample_q': 256}}, {'dataset': pairs})
    assert [ds.hr_size(k) for k in range(5)] == [16, 44, 72, 100, 128]
    flips = set()
    for epoch in range(6):
        ds.reseed(0, epoch)
        for idx in range(5):
            s = ds[idx]
            assert s['inp'].shape == (3, 16, 16) and s['gt'].shape == (256, 3)
            assert torch.allclose(s['cell'], torch.full((256, 2), 2 / ds.hr_size(idx)))
            inp_right = s['inp'][:, :, 8:].mean() > s['inp'][:, :, :8].mean()
            gt_right = (s['gt'].mean(1)[s['coord'][:, 1] > 0].mean() > s['gt'].mean(1)[s['coord'][:, 1] < 0].mean())
            assert inp_right == gt_right
            flips.add(bool(inp_right))
    assert flips == {True, False}
    fixed = datasets.make({'name': 'sr-implicit-uniform-varied', 'args': {'size_min': 16, 'size_max': 128,
                                                                         'gt_resize': 64}}, {'dataset': pairs})
    s = fixed[4]
    assert s['gt'].shape == (64 * 64, 3) and torch.allclose(s['cell'][0], torch.tensor([2 / 64, 2 / 64]))


def test_reseeded_samples_are_reproducible_and_worker_independent(position_folder):
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': position_folder, 'repeat': 4}})
    ds = datasets.make({'name': 'sr-implicit-downsampled', 'args': {
        'inp_size': 16, 'scale_max': 4, 'augment': True, 'sample_q': 32}}, {'dataset': folder})
    ds.reseed(7, epoch=2)
    a = [ds[k] for k in range(len(ds))]
    ds.reseed(7, epoch=2)
    assert all(torch.equal(x['gt'], ds[k]['gt']) for k, x in enumerate(a))
    ds.reseed(7, epoch=3)
    assert not all(torch.equal(x['coord'], ds[k]['coord']) for k, x in enumerate(a))
    ds.reseed(7, epoch=2)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert torch.equal(torch.cat([b['inp'] for b in batches]), torch.stack([x['inp'] for x in a]))


def _fingerprint(sample):
    """Per key: shape, sum and a position-weighted sum (float64), which any change of draw or order moves."""
    out = {}
    for key in ('inp', 'coord', 'cell', 'gt'):
        x = sample[key].double().flatten()
        weight = torch.arange(len(x), dtype=torch.float64) % 7 + 1
        out[key] = (tuple(sample[key].shape), x.sum().item(), (x * weight).sum().item())
    return out


# computed with the wrappers as they were before their rewrite from the method's description (same
# draws in the same order for a given seed, epoch and index, so training stays bit-reproducible)
PINNED_SAMPLES = {
    ('paired', 0, 0): {
        'inp': ((3, 8, 8), 92.258825, 379.937263),
        'coord': ((50, 2), 6.416671, 8.541683),
        'cell': ((50, 2), 8.333334, 32.916668),
        'gt': ((50, 3), 78.376472, 308.239222),
    },
    ('paired', 0, 1): {
        'inp': ((3, 8, 8), 94.200002, 379.270596),
        'coord': ((50, 2), 3.500005, 18.041685),
        'cell': ((50, 2), 8.333334, 32.916668),
        'gt': ((50, 3), 74.549021, 301.043143),
    },
    ('paired', 3, 0): {
        'inp': ((3, 8, 8), 96.992159, 367.611772),
        'coord': ((50, 2), 8.583338, 27.875019),
        'cell': ((50, 2), 8.333334, 32.916668),
        'gt': ((50, 3), 81.262747, 328.2353),
    },
    ('paired', 3, 1): {
        'inp': ((3, 8, 8), 90.803923, 360.454909),
        'coord': ((50, 2), -9.499996, -49.124985),
        'cell': ((50, 2), 8.333334, 32.916668),
        'gt': ((50, 3), 72.807844, 296.552946),
    },
    ('downsampled', 0, 0): {
        'inp': ((3, 12, 12), 218.262751, 871.552965),
        'coord': ((60, 2), 8.823531, 39.411773),
        'cell': ((60, 2), 14.117647, 56.117647),
        'gt': ((60, 3), 95.607845, 382.741184),
    },
    ('downsampled', 0, 1): {
        'inp': ((3, 12, 12), 222.815692, 898.298063),
        'coord': ((60, 2), -3.333328, -24.833312),
        'cell': ((60, 2), 13.333333, 53.0),
        'gt': ((60, 3), 91.760786, 351.286281),
    },
    ('downsampled', 3, 0): {
        'inp': ((3, 12, 12), 219.137262, 872.125517),
        'coord': ((60, 2), 2.7317, 12.292655),
        'cell': ((60, 2), 5.853658, 23.268292),
        'gt': ((60, 3), 90.631374, 362.105889),
    },
    ('downsampled', 3, 1): {
        'inp': ((3, 12, 12), 221.105889, 882.400026),
        'coord': ((60, 2), -1.25714, -14.628562),
        'cell': ((60, 2), 6.857143, 27.257143),
        'gt': ((60, 3), 98.717649, 390.254909),
    },
    ('downsampled-full', 0, 0): {
        'inp': ((3, 39, 51), 2981.41185, 11926.541515),
        'coord': ((6210, 2), 0.000396, -1.006144),
        'cell': ((6210, 2), 318.000007, 1271.868626),
        'gt': ((6210, 3), 9307.733519, 37190.102708),
    },
    ('downsampled-full', 0, 1): {
        'inp': ((3, 52, 34), 2657.553018, 10622.917956),
        'coord': ((5890, 2), -0.00012, -3.117632),
        'cell': ((5890, 2), 314.0, 1255.936841),
        'gt': ((5890, 3), 8853.357039, 35351.847765),
    },
    ('downsampled-full', 3, 0): {
        'inp': ((3, 22, 29), 956.509833, 3818.945213),
        'coord': ((6120, 2), 0.000429, -2.049917),
        'cell': ((6120, 2), 316.000004, 1263.837924),
        'gt': ((6120, 3), 9175.549202, 36667.98505),
    },
    ('downsampled-full', 3, 1): {
        'inp': ((3, 34, 22), 1124.541209, 4473.019737),
        'coord': ((5890, 2), -0.00012, -3.117632),
        'cell': ((5890, 2), 314.0, 1255.936841),
        'gt': ((5890, 3), 8853.357039, 35351.847765),
    },
    ('varied', 0, 0): {
        'inp': ((3, 20, 24), 720.309819, 2905.698098),
        'coord': ((40, 2), 9.35, 46.025002),
        'cell': ((40, 2), 3.666667, 14.4),
        'gt': ((40, 3), 60.313727, 236.439223),
    },
    ('varied', 0, 1): {
        'inp': ((3, 18, 30), 785.478447, 3107.494179),
        'coord': ((40, 2), 0.246667, -12.073333),
        'cell': ((40, 2), 2.133333, 8.386667),
        'gt': ((40, 3), 61.368629, 244.01177),
    },
    ('varied', 3, 0): {
        'inp': ((3, 20, 24), 720.309819, 2887.074568),
        'coord': ((40, 2), -2.325, -15.050001),
        'cell': ((40, 2), 3.666667, 14.4),
        'gt': ((40, 3), 63.890198, 260.717654),
    },
    ('varied', 3, 1): {
        'inp': ((3, 18, 30), 785.478447, 3099.913788),
        'coord': ((40, 2), -2.92, -1.66),
        'cell': ((40, 2), 2.133333, 8.386667),
        'gt': ((40, 3), 64.298041, 247.647064),
    },
}


def test_samples_are_pinned_for_a_seed_epoch_and_index():
    rng = np.random.default_rng(2024)
    imgs = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in [(70, 90), (96, 64)]]
    lrs = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in [(20, 24), (18, 30)]]
    hrs = [torch.from_numpy(rng.integers(0, 256, (3, 3 * h, 3 * w), dtype=np.uint8)) for h, w in [(20, 24), (18, 30)]]
    pairs = list(zip(lrs, hrs))
    specs = {
        'paired': ({'name': 'sr-implicit-paired', 'args': {'inp_size': 8, 'augment': True, 'sample_q': 50}}, pairs),
        'downsampled': ({'name': 'sr-implicit-downsampled', 'args': {
            'inp_size': 12, 'scale_max': 4, 'augment': True, 'sample_q': 60}}, imgs),
        'downsampled-full': ({'name': 'sr-implicit-downsampled', 'args': {'scale_min': 1.5, 'scale_max': 3.5}}, imgs),
        'varied': ({'name': 'sr-implicit-uniform-varied', 'args': {
            'size_min': 40, 'size_max': 60, 'augment': True, 'sample_q': 40}}, pairs),
    }
    for name, (spec, data) in specs.items():
        ds = datasets.make(spec, {'dataset': data})
        for epoch in (0, 3):
            ds.reseed(11, epoch)
            for idx in (0, 1):
                got, want = _fingerprint(ds[idx]), PINNED_SAMPLES[(name, epoch, idx)]
                for key in want:
                    assert got[key][0] == want[key][0], (name, epoch, idx, key)
                    assert got[key][1:] == pytest.approx(want[key][1:], rel=1e-6, abs=1e-5), (name, epoch, idx, key)


@pytest.mark.parametrize('augment', [False, True])
def test_downsampled_fast_is_the_liif_sample_as_a_grid(position_folder, augment):
    """sr-implicit-downsampled-fast draws as sr-implicit-downsampled with sample_q = inp_size^2 (same
    scale, crop, symmetry and pixels from the same stream), laid out as an inp_size x inp_size grid
    with one cell; the pixels are distinct and their colours are the HR pixels at their coordinates."""
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': position_folder, 'repeat': 3}})
    args = {'inp_size': 12, 'scale_min': 1.5, 'scale_max': 4, 'augment': augment}
    fast = datasets.make({'name': 'sr-implicit-downsampled-fast', 'args': args}, {'dataset': folder})
    liif = datasets.make({'name': 'sr-implicit-downsampled', 'args': {**args, 'sample_q': 144}}, {'dataset': folder})
    fast.reseed(4, 2)
    liif.reseed(4, 2)
    for idx in range(len(fast)):
        s, p = fast[idx], liif[idx]
        assert s['inp'].shape == (3, 12, 12) and s['coord'].shape == (12, 12, 2)
        assert s['gt'].shape == (3, 12, 12) and s['cell'].shape == (2,) and s['cell'].dtype == torch.float32
        assert torch.equal(s['inp'], p['inp']) and torch.equal(s['cell'], p['cell'][0])
        assert torch.equal(s['coord'].view(-1, 2), p['coord'])
        assert torch.equal(s['gt'].view(3, -1).t(), p['gt'])
        i, j, h, w = _query_pixels(s['coord'].view(-1, 2), s['cell'])
        assert len(set(zip(i.tolist(), j.tolist()))) == 144 and h == w
        rows, cols = _decode(s['gt'].view(3, -1).t())
        if not augment:
            assert len(set((rows - i).tolist())) == 1 and len(set((cols - j).tolist())) == 1


def test_downsampled_fast_whole_image_and_full_grid(tmp_path):
    _save(tmp_path / 's', 'x.png', _position_image(30, 40))
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': str(tmp_path / 's')}})
    whole = datasets.make({'name': 'sr-implicit-downsampled-fast', 'args': {'scale_min': 2.5}}, {'dataset': folder})[0]
    assert whole['inp'].shape == (3, 12, 16) and whole['gt'].shape == (3, 30, 40)
    assert torch.equal(whole['coord'], make_coord((30, 40), flatten=False))
    assert torch.equal(whole['cell'], torch.tensor([2 / 30, 2 / 40]))
    assert torch.equal((whole['gt'] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(_position_image(30, 40)))
    crops = datasets.make({'name': 'sr-implicit-downsampled-fast', 'args': {'inp_size': 10, 'scale_min': 2,
                                                                           'scale_max': 3}}, {'dataset': folder})
    full = crops.full_grid()
    full.reseed(0)
    s = full[0]
    side = s['gt'].shape[-1]
    assert s['inp'].shape == (3, 10, 10) and s['gt'].shape == (3, side, side) and 20 <= side <= 30
    assert torch.equal(s['coord'], make_coord((side, side), flatten=False))
