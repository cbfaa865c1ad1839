"""The paper's test configurations (LIIF.md, 'Evaluation protocol'), in the authors' config style.

x2-x4 read the published MATLAB-bicubic LR folders; above x4 the HR image is downscaled on the
fly ('pil' reproduces the paper's numbers, 'matlab' is the MATLAB-exact alternative).
"""
from typing import Any, Dict, Tuple

from utils.errors import UserError

DIV2K_SCALES = (2, 3, 4, 6, 12, 18, 24, 30)
BENCHMARK_SETS = ('Set5', 'Set14', 'B100', 'Urban100')
BENCHMARK_SCALES = (2, 3, 4, 6, 8)
PAIRED_SCALES = (2, 3, 4)
RESIZE_METHODS = ('pil', 'matlab')
DATA_NORM = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}
EVAL_BSIZE = 30000


def config_name(dataset: str, scale: int) -> str:
    """File name of a test config, as in the authors' repository: test-div2k-4.yaml, test-set5-2.yaml."""
    return f"test-{dataset.lower()}-{scale}.yaml"


def _folders(dataset: str, scale: int) -> Tuple[str, str]:
    """(HR folder, LR_bicubic folder) of a dataset at the original ./load paths."""
    if dataset.lower() == 'div2k':
        return './load/div2k/DIV2K_valid_HR', f'./load/div2k/DIV2K_valid_LR_bicubic/X{scale}'
    return f'./load/benchmark/{dataset}/HR', f'./load/benchmark/{dataset}/LR_bicubic/X{scale}'


def paper_test_config(dataset: str, scale: int, resize: str = 'pil') -> Dict[str, Any]:
    """Test config of `dataset` ('div2k' or a benchmark set name) at integer `scale`."""
    if resize not in RESIZE_METHODS:
        raise UserError(f"resize must be one of {', '.join(RESIZE_METHODS)}, not {resize!r}")
    if not (isinstance(scale, int) and scale >= 1):
        raise UserError(f"scale must be a positive integer, not {scale!r}")
    hr, lr = _folders(dataset, scale)
    if scale in PAIRED_SCALES:
        spec = {'dataset': {'name': 'paired-image-folders', 'args': {'root_path_1': lr, 'root_path_2': hr}},
                'wrapper': {'name': 'sr-implicit-paired', 'args': {}}}
    else:
        spec = {'dataset': {'name': 'image-folder', 'args': {'root_path': hr}},
                'wrapper': {'name': 'sr-implicit-downsampled', 'args': {'scale_min': scale, 'resize': resize}}}
    kind = 'div2k' if dataset.lower() == 'div2k' else 'benchmark'
    return {'test_dataset': {**spec, 'batch_size': 1},
            'data_norm': DATA_NORM, 'eval_type': f'{kind}-{scale}', 'eval_bsize': EVAL_BSIZE}


def paper_configs() -> Dict[str, Dict[str, Any]]:
    """Every test of the paper by file name: DIV2K x2..x30 and the four benchmarks x2..x8."""
    out = {config_name('div2k', s): paper_test_config('div2k', s) for s in DIV2K_SCALES}
    for name in BENCHMARK_SETS:
        out.update({config_name(name, s): paper_test_config(name, s) for s in BENCHMARK_SCALES})
    return out
