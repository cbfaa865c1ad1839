"""Shared helpers of the benchmark scripts: the paper's model, timing, peak memory, child processes."""
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import models  # noqa: E402

# the authors' full-size configurations with the EDSR-baseline encoder, as the benchmarks build them
EDSR_BASELINE = {'name': 'edsr-baseline', 'args': {'no_upsampling': True}}
PAPER_LIIF = {'name': 'liif', 'args': {
    'encoder_spec': EDSR_BASELINE,
    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256, 256, 256, 256]}}}}
PAPER_LTE = {'name': 'lte', 'args': {
    'encoder_spec': EDSR_BASELINE, 'hidden_dim': 256,
    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256, 256, 256]}}}}
PAPER_LMLIIF = {'name': 'lmliif', 'args': {
    'encoder_spec': EDSR_BASELINE,
    'imnet_spec': {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 16, 'hidden_depth': 6,
                                             'mod_scale': True, 'mod_shift': True}},
    'hypernet_spec': {'name': 'mlp', 'args': {'out_dim': 208, 'hidden_list': [208]}},
    'local_ensemble': True, 'feat_unfold': True, 'cell_decode': True, 'mod_input': True}}


def paper_model(device: str, seed: int = 0) -> torch.nn.Module:
    """EDSR-baseline-LIIF (the paper's configuration) with seeded random weights on `device`."""
    torch.manual_seed(seed)
    return models.make(PAPER_LIIF).to(device)


def sync(device: str) -> None:
    """Wait for queued GPU work so that wall-clock timings are honest."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def run_times(fn: Callable[[], Any], device: str, repeat: int, warmup: int = 1) -> List[float]:
    """Wall-clock seconds of each of `repeat` runs of fn() after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def median_time(fn: Callable[[], Any], device: str, repeat: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of fn() over `repeat` runs after `warmup` runs (the upper one of an even count)."""
    times = sorted(run_times(fn, device, repeat, warmup))
    return times[len(times) // 2]


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(device: str) -> Dict[str, float]:
    """{'rss_mb': peak host RSS, 'gpu_mb': peak CUDA allocation (if on a GPU)}."""
    out = {'rss_mb': peak_rss_mb()}
    if torch.device(device).type == 'cuda':
        out['gpu_mb'] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


def run_child(script: str, case: Dict[str, Any], extra: List[str]) -> Dict[str, Any]:
    """Run `script --child JSON` in a fresh interpreter (its own peak memory) and return its JSON result."""
    cmd = [sys.executable, script, '--child', json.dumps(case)] + extra
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def matmul_peak(device: str, dtype: torch.dtype, rows: int, repeat: int = 5) -> Dict[str, float]:
    """GFLOP/s of a large square matmul and of the query shape (rows x 256) @ (256 x 256) with bias."""
    n = 4096 if torch.device(device).type == 'cpu' else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t_sq = median_time(lambda: torch.mm(a, b), device, repeat)
    return {'square_n': n, 'square_gflops': 2 * n ** 3 / t_sq / 1e9,
            'query_rows': rows, 'query_gflops': shape_gflops(device, dtype, rows, repeat)}


def shape_gflops(device: str, dtype: torch.dtype, rows: int, repeat: int = 5) -> float:
    """GFLOP/s of the query MLP's shape (rows x 256) @ (256 x 256) + bias, into a reused output."""
    x = torch.randn(rows, 256, device=device, dtype=dtype)
    w = torch.randn(256, 256, device=device, dtype=dtype) * 0.06
    bias = torch.randn(256, device=device, dtype=dtype)
    out = torch.empty(rows, 256, device=device, dtype=dtype)
    reps = max(1, (1 << 18) // rows)

    def chain():
        for _ in range(reps):
            torch.addmm(bias, x, w.t(), out=out)

    t_q = median_time(chain, device, repeat)
    return 2 * rows * 256 * 256 * reps / t_q / 1e9


def environment(device: str) -> str:
    """One line describing the machine and library versions."""
    if torch.device(device).type == 'cuda':
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU x{os.cpu_count()} ({torch.get_num_threads()} torch threads)"
    return f"torch {torch.__version__} on {where}"
