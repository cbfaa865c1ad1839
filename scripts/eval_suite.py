"""Evaluate one checkpoint (or MATLAB bicubic) on a whole suite; write a markdown table and JSON.

    python scripts/eval_suite.py --model CKPT --suite benchmark --sets Set5,Set14 --scales 2,3,4,6,8 --out DIR
    python scripts/eval_suite.py --bicubic --suite div2k --data-root /data --out DIR

Rows are datasets, columns scales, cells 'PSNR / SSIM', like Tables 1 and 2 of the paper.
"""
import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.amp import resolve_precision  # noqa: E402
from utils.atomic import atomic_open  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from evaluation.protocol import (apply_root_overrides, bicubic_predictor, evaluate,  # noqa: E402
                                 liif_predictor, make_test_loader, parse_eval_type, parse_root_override)
from evaluation.gallery import GalleryWriter, dataset_names  # noqa: E402
from inference.bounded import choose_test_time  # noqa: E402
from inference.loading import load_sr, select_device  # noqa: E402
from utils.norm import DataNorm  # noqa: E402
from utils import testtime  # noqa: E402
from utils.test_configs import (BENCHMARK_SCALES, BENCHMARK_SETS, DATA_NORM, DIV2K_SCALES,  # noqa: E402
                                PAIRED_SCALES, RESIZE_METHODS, paper_test_config)

log = logging.getLogger('eval_suite')


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument('--model', help="checkpoint of a LIIF or MetaSR model")
    what.add_argument('--bicubic', action='store_true', help="evaluate MATLAB bicubic upsampling instead")
    p.add_argument('--suite', choices=('benchmark', 'div2k'), required=True)
    p.add_argument('--sets', default=None, help=f"benchmark sets (default {','.join(BENCHMARK_SETS)})")
    p.add_argument('--scales', type=_int_list, default=None,
                   help="scales (default: the paper's for the suite)")
    p.add_argument('--resize', choices=RESIZE_METHODS, default='pil',
                   help="LR above x4: PIL bicubic as the paper (default) or MATLAB's")
    p.add_argument('--out', required=True, help="folder for <suite>.md and <suite>.json")
    p.add_argument('--gallery', default=None, metavar='DIR',
                   help="also write DIR/index.html: per image, bicubic | model | HR where the model gains most")
    p.add_argument('--data-root', action='append', default=[], metavar='[OLD=]NEW',
                   help="replace the dataset path prefix OLD (default ./load) by NEW; repeatable")
    p.add_argument('--lr-cache', default='./load/_lr_cache',
                   help="where LR images generated for a missing LR_bicubic folder are kept")
    p.add_argument('--gpu', default=None, help="CUDA device number, or cpu (default: cuda:0 when CUDA is present, else the CPU)")
    p.add_argument('--eval-bsize', type=int, default=None, help="queries per model call (default 30000)")
    p.add_argument('--precision', default='fp32', metavar='{fp32,bf16,fp16,auto}',
                   help="arithmetic of the model (default fp32, the paper's numbers); auto: bf16 on CUDA or a CPU "
                        "with native bf16 matmuls")
    testtime.add_arguments(p)
    p.add_argument('--trust-checkpoint', action='store_true',
                   help="load a checkpoint holding arbitrary Python objects (unpickling it can run any code)")
    return p.parse_args(argv)


def render_markdown(report: Dict[str, Any]) -> str:
    """The results as a markdown table: rows = datasets, columns = scales, 'PSNR / SSIM'."""
    scales = report['scales']
    on_y = report['suite'] == 'benchmark'  # LIIF.md: benchmarks on Y, shave s; DIV2K on RGB, shave s + 6
    lines = [f"# {report['suite']} evaluation: {report['method']}", '',
             f"PSNR (dB) / SSIM. PSNR on {'Y' if on_y else 'RGB'}, shave {'s' if on_y else 's + 6'} px; "
             f"SSIM on Y, same shave; outputs clamped to [0, 1], not rounded.", '',
             "| Dataset | " + " | ".join(f"x{s}" for s in scales) + " |",
             "|---|" + "---|" * len(scales)]
    for name, row in report['results'].items():
        cells = [f"{row[str(s)]['psnr']:.2f} / {row[str(s)]['ssim']:.4f}" for s in scales]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, folder in report.get('skipped', {}).items():
        lines.append(f"| {name} | " + " | ".join('-' for _ in scales) + " |")
    paired = [s for s in scales if s in PAIRED_SCALES]
    other = [s for s in scales if s not in PAIRED_SCALES]
    lines.append('')
    if paired:
        lines.append(f"LR x{', x'.join(map(str, paired))}: MATLAB bicubic (LR_bicubic folders; generated "
                     f"from HR with the MATLAB-exact resize where missing).")
    if other:
        lines.append(f"LR x{', x'.join(map(str, other))}: {report['resize'].upper()} bicubic downscale of "
                     f"the HR image{' (as in the paper)' if report['resize'] == 'pil' else ''}.")
    for name, folder in report.get('skipped', {}).items():
        lines.append(f"{name}: skipped, no HR folder at {folder}.")
    return '\n'.join(lines) + '\n'


def hr_folder(name: str, suite: str, overrides: List) -> str:
    """Where the HR images of a dataset are read from, --data-root applied."""
    cfg = paper_test_config(name.lower() if suite == 'div2k' else name, max(PAIRED_SCALES))
    args = apply_root_overrides(cfg['test_dataset'], overrides)['dataset']['args']
    return args['root_path_2']


def present_sets(names: List[str], suite: str, overrides: List, explicit: bool) -> Dict[str, str]:
    """{name: HR folder} of the sets found, before any work; missing ones stop an explicit --sets, else are skipped."""
    folders = {n: hr_folder(n, suite, overrides) for n in names}
    missing = {n: f for n, f in folders.items() if not os.path.isdir(f)}
    if missing and (explicit or len(missing) == len(names)):
        listed = ', '.join(f"{n} ({f})" for n, f in missing.items())
        raise UserError(f"no HR folder for {listed}; --data-root OLD=NEW points the configs' ./load elsewhere")
    for n, f in missing.items():
        log.warning("%s skipped: no HR folder at %s (pass --sets to choose the sets)", n, f)
    return {n: f for n, f in folders.items() if n not in missing}


def _write_atomic(path: str, text: str) -> None:
    """Write text to a temporary file beside path, then rename."""
    with atomic_open(path, 'w') as f:
        f.write(text)


def main(argv: Optional[List[str]] = None) -> None:
    """Evaluate every (dataset, scale) of the suite, then write and print the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if args.suite == 'div2k':
        if args.sets is not None:
            raise UserError("--sets applies to the benchmark suite only")
        names = ['DIV2K']
    else:
        names = [n.strip() for n in (args.sets or ','.join(BENCHMARK_SETS)).split(',') if n.strip()]
    scales = args.scales or list(DIV2K_SCALES if args.suite == 'div2k' else BENCHMARK_SCALES)
    if args.eval_bsize is not None and args.eval_bsize < 1:
        raise UserError(f"--eval-bsize must be positive, not {args.eval_bsize}")
    if args.gallery and args.bicubic:
        raise UserError("--gallery compares a model with bicubic: it needs --model, not --bicubic")
    overrides = [parse_root_override(t) for t in args.data_root]
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {args.out}: {e.strerror}") from None
    device = select_device(args.gpu)
    precision = resolve_precision(args.precision, device)
    # every HR folder is looked for before any LR image is generated or any model loaded
    found = present_sets(names, args.suite, overrides, explicit=args.sets is not None or args.suite == 'div2k')
    skipped = {n: hr_folder(n, args.suite, overrides) for n in names if n not in found}

    # build every loader first: a missing folder fails before any long evaluation
    jobs = []
    for name in found:
        for s in scales:
            cfg = paper_test_config(name.lower() if args.suite == 'div2k' else name, s, args.resize)
            protocol = parse_eval_type(cfg['eval_type'])
            jobs.append((name, s, cfg, protocol, make_test_loader(cfg['test_dataset'], protocol, args.lr_cache,
                                                                  overrides)))
    if args.bicubic:
        predict, method = bicubic_predictor(), 'Bicubic (MATLAB imresize of the LR)'
    else:
        # the paper's test configs all carry DATA_NORM: the fallback for checkpoints that store none
        loaded = load_sr(args.model, device, DataNorm.from_mapping(DATA_NORM), "the test configs' data_norm",
                         trusted=args.trust_checkpoint)
        predict = None
        test_time = choose_test_time(loaded.model, testtime.flag_values(args))
        method = f"`{os.path.basename(args.model)}`" + (f" in {precision.name}" if precision.amp else '')
        if test_time != testtime.NONE:
            method += f" ({test_time.describe()})"
        log.info("precision %s (%s)", precision.name, precision.reason)
        log.info("test-time options: %s", test_time.describe())

    # the gallery publishes its files and index.html only once every evaluation has succeeded
    gallery = GalleryWriter(args.gallery, f"{method.strip('`')}: {args.suite}") if args.gallery else None
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for name, s, cfg, protocol, loader in jobs:
            if not args.bicubic:
                predict = liif_predictor(loaded.model, loaded.norm, args.eval_bsize or cfg['eval_bsize'],
                                         precision.amp, test_time)
            lr = 'matlab' if s in PAIRED_SCALES else args.resize
            if gallery:
                gallery.section(f"{name} x{s}", protocol, dataset_names(loader.dataset), note=f"LR: {lr} bicubic")
            res = evaluate(predict, loader, protocol, device, with_ssim=True, desc=f"{name} x{s}",
                           on_image=gallery.add if gallery else None)
            res['lr'] = lr
            log.info("%s x%d: PSNR %.4f, SSIM %.4f (%d images)", name, s, res['psnr'], res['ssim'], res['images'])
            results.setdefault(name, {})[str(s)] = res
    except BaseException:
        if gallery:
            gallery.discard()
        raise
    if gallery:
        log.info("gallery: %s", gallery.commit())

    report = {'method': method, 'model': None if args.bicubic else os.path.abspath(args.model),
              'data_norm': None if args.bicubic else loaded.norm.to_mapping(),
              'suite': args.suite, 'scales': scales, 'resize': args.resize, 'results': results,
              'skipped': skipped}
    table = render_markdown(report)
    _write_atomic(os.path.join(args.out, f"{args.suite}.json"), json.dumps(report, indent=2) + '\n')
    _write_atomic(os.path.join(args.out, f"{args.suite}.md"), table)
    print(table, end='')


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
