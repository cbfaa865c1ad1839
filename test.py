"""Evaluate a checkpoint with the paper's protocol: python test.py --config CFG --model CKPT."""
import argparse
import logging
import os
import sys
from typing import List, Optional

from utils.cli import run_cli
from utils.config import load_config
from utils.amp import resolve_precision
from utils.errors import UserError
from evaluation.protocol import (evaluate, liif_predictor, make_test_loader, parse_eval_type,
                                 parse_root_override, row_chunked_predictor)
from evaluation.gallery import GalleryWriter, dataset_names
from inference.bounded import choose_test_time
from inference.loading import load_sr, select_device
from utils.norm import IDENTITY, DataNorm
from utils import testtime

log = logging.getLogger('test')


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--config', required=True, help="test config (configs/test/*.yaml)")
    p.add_argument('--model', required=True, help="checkpoint of a LIIF or MetaSR model")
    p.add_argument('--gpu', default=None, help="CUDA device number, or cpu (default: cuda:0 when CUDA is present, else the CPU)")
    p.add_argument('--eval-bsize', type=int, default=None,
                   help="queries per model call (default: the config's eval_bsize)")
    p.add_argument('--data-root', action='append', default=[], metavar='[OLD=]NEW',
                   help="replace the dataset path prefix OLD (default ./load) by NEW; repeatable")
    p.add_argument('--lr-cache', default='./load/_lr_cache',
                   help="where LR images generated for a missing LR_bicubic folder are kept")
    p.add_argument('--ssim', action='store_true', help="also compute SSIM (on Y)")
    p.add_argument('--precision', default='fp32', metavar='{fp32,bf16,fp16,auto}',
                   help="arithmetic of the model (default fp32, the paper's numbers); auto: bf16 on CUDA or a CPU "
                        "with native bf16 matmuls")
    testtime.add_arguments(p)
    p.add_argument('--authors-row-chunks', type=int, default=None, metavar='ROWS',
                   help="SRNO only: evaluate as the authors' test.py with eval_bsize ROWS does, each block of ROWS "
                        "output rows a separate call (changes the output; default: the exact whole-grid result)")
    p.add_argument('--gallery', default=None, metavar='DIR',
                   help="also write DIR/index.html: per image, bicubic | model | HR where the model gains most")
    p.add_argument('--trust-checkpoint', action='store_true',
                   help="load a checkpoint holding arbitrary Python objects (unpickling it can run any code)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Load config and model, evaluate, print the mean PSNR (and SSIM)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    cfg = load_config(args.config)
    protocol = parse_eval_type(cfg.get('eval_type'))
    bsize = args.eval_bsize if args.eval_bsize is not None else cfg.get('eval_bsize')
    if bsize is not None and int(bsize) < 1:
        raise UserError(f"--eval-bsize must be positive, not {bsize}")
    overrides = [parse_root_override(t) for t in args.data_root]
    device = select_device(args.gpu)
    precision = resolve_precision(args.precision, device)
    log.info("precision %s (%s)", precision.name, precision.reason)
    if cfg.get('data_norm') is None:
        fallback, source = IDENTITY, "no normalisation (the authors' default for a config without data_norm)"
    else:
        fallback, source = DataNorm.from_mapping(cfg['data_norm']), f"the data_norm of {args.config}"
    loaded = load_sr(args.model, device, fallback, source, trusted=args.trust_checkpoint)
    loader = make_test_loader(cfg.get('test_dataset'), protocol, args.lr_cache, overrides)
    log.info("%d images, %s, %s", len(loader.dataset), cfg.get('eval_type'), protocol.describe())
    # the model's recommendation, then the config's keys, then the flags
    test_time = choose_test_time(loaded.model, cfg, testtime.flag_values(args))
    log.info("test-time options: %s", test_time.describe())
    if args.authors_row_chunks is not None:
        log.info("the authors' row-chunked evaluation: blocks of %d rows, each a separate call", args.authors_row_chunks)
        predict = row_chunked_predictor(loaded.model, loaded.norm, args.authors_row_chunks, test_time)
    else:
        predict = liif_predictor(loaded.model, loaded.norm, bsize, precision.amp, test_time)
    if args.gallery:
        # published (images, then index.html) only if the whole evaluation succeeds
        title = f"{os.path.basename(args.model)} on {os.path.basename(args.config)}"
        with GalleryWriter(args.gallery, title) as gallery:
            gallery.section(str(cfg.get('eval_type') or os.path.basename(args.config)), protocol,
                            dataset_names(loader.dataset))
            res = evaluate(predict, loader, protocol, device, args.ssim, on_image=gallery.add)
        log.info("gallery: %s", os.path.join(args.gallery, 'index.html'))
    else:
        res = evaluate(predict, loader, protocol, device, args.ssim)
    print(f"psnr: {res['psnr']:.4f}")
    if args.ssim:
        print(f"ssim: {res['ssim']:.4f}")


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
