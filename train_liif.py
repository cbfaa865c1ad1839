"""Train LIIF (or MetaSR) from a config: python train_liif.py --config configs/train-div2k/train_edsr-baseline-liif.yaml

Several GPUs or machines: torchrun --nproc_per_node=N train_liif.py --config CFG (or --gpu 0,1,...).
"""
import argparse
import sys
from typing import List, Optional

from utils.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of the original train_liif.py plus -o, --overwrite and --save-root."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', help='training config (YAML); optional with --resume (the stored one is used)')
    p.add_argument('--name', help='run folder name under --save-root (default: the config file stem)')
    p.add_argument('--tag', help="appended to the name as '_<tag>'")
    p.add_argument('--resume', metavar='CKPT', help='continue from this checkpoint (any folder)')
    p.add_argument('--gpu', metavar='IDS', help='GPU ids, e.g. 0 or 0,1 (several start one DDP process each)')
    p.add_argument('-o', '--override', dest='overrides', action='append', default=[], metavar='KEY.SUB=VALUE',
                   help='set a config value (YAML syntax), e.g. -o epoch_max=10 -o optimizer.args.lr=2e-4')
    p.add_argument('--overwrite', action='store_true', help='delete an existing run folder of the same name')
    p.add_argument('--save-root', default='save', help='parent folder of run folders (default: save)')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='--resume from a checkpoint holding arbitrary Python objects (unpickling it can run any code)')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the command line and train; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from training.trainer import RunRequest, train  # late: --help stays fast
    return train(RunRequest(config=args.config, name=args.name, tag=args.tag, resume=args.resume,
                            gpu=args.gpu, overrides=args.overrides, overwrite=args.overwrite,
                            save_root=args.save_root, script=__file__, argv=argv,
                            trust_checkpoint=args.trust_checkpoint))


if __name__ == '__main__':
    run_cli(lambda: sys.exit(main()))
