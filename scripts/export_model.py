"""Strip a training checkpoint down to a release checkpoint: {'model': {'name', 'args', 'sd'}, 'data_norm', 'meta'}.

    python scripts/export_model.py save/RUN/epoch-last.pth weights/liif-edsr-baseline.pth
    python scripts/export_model.py weights/liif-edsr-baseline.pth liif.safetensors   # loading runs no code

The optimizer, scheduler, RNG and resume state are dropped; what the model was trained with
(steps, epoch, the training config) is kept under 'meta' as plain data, and its normalisation
as 'data_norm' (which inference uses; the authors' loader ignores the extra keys).
--format safetensors (or a .safetensors destination) writes the same checkpoint as safetensors: the
weights as tensors, the rest as JSON in the header; every script takes it as --model.
"""
import argparse
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.checkpoint import SAFETENSORS_EXT, atomic_save, load_checkpoint, save_safetensors  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from inference.loading import stored_norm  # noqa: E402
from utils.errors import UserError  # noqa: E402


def release_checkpoint(ckpt: Dict[str, Any], fp16: bool = False) -> Dict[str, Any]:
    """The model entry of a training checkpoint (float tensors in fp16 if asked), its data_norm (when it
    stores one) and training metadata (a release checkpoint's own 'meta', re-exported or converted)."""
    entry = dict(ckpt['model'])
    sd = entry['sd']
    if fp16:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    entry['sd'] = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    state = ckpt.get('train_state') or {}
    config = dict(state.get('config') or {})
    config.pop('resume', None)  # a path on the training machine, meaningless elsewhere
    meta = {'epoch': ckpt.get('epoch'), 'global_step': state.get('global_step'),
            'best_val_psnr': state.get('best_val_psnr'), 'train_config': config or None}
    if not state and isinstance(ckpt.get('meta'), dict):
        meta = dict(ckpt['meta'])  # already a release checkpoint: keep what it says of its training
    out = {'model': entry, 'meta': meta}
    norm = stored_norm(ckpt)
    if norm is not None:
        out['data_norm'] = norm.norm.to_mapping()
    return out


FORMATS = ('pth', 'safetensors')
# destinations whose extension names a format; any other extension takes --format (default pth)
EXTENSIONS = {'.pth': 'pth', '.pt': 'pth', SAFETENSORS_EXT: 'safetensors'}


def output_format(dst: str, requested: Optional[str]) -> str:
    """The format to write: --format, else the one the destination's extension names, else pth."""
    implied = EXTENSIONS.get(os.path.splitext(dst)[1].lower())
    if requested is not None and implied is not None and requested != implied:
        raise UserError(f"--format {requested} does not match the destination {os.path.basename(dst)} "
                        f"(a {implied} name): change one of them")
    return requested or implied or 'pth'


def main(argv: Optional[List[str]] = None) -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src', help="training checkpoint (e.g. epoch-last.pth)")
    p.add_argument('dst', help="release checkpoint to write")
    p.add_argument('--fp16', action='store_true', help="store weights in half precision (half the size)")
    p.add_argument('--format', choices=FORMATS, default=None,
                   help="file format (default: the destination's extension, .safetensors or .pth; else pth)")
    p.add_argument('--trust-checkpoint', action='store_true',
                   help="load a checkpoint holding arbitrary Python objects (unpickling it can run any code)")
    args = p.parse_args(argv)
    if os.path.isdir(args.dst):
        raise UserError(f"{args.dst} is a folder: give the path of the release checkpoint to write")
    fmt = output_format(args.dst, args.format)
    out = release_checkpoint(load_checkpoint(args.src, trusted=args.trust_checkpoint), fp16=args.fp16)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    if fmt == 'safetensors':
        save_safetensors(args.dst, out)
    else:
        atomic_save(out, args.dst)
    print(f"wrote {args.dst} ({os.path.getsize(args.dst) / 2 ** 20:.2f} MiB, "
          f"step {out['meta']['global_step']}, epoch {out['meta']['epoch']})")


if __name__ == '__main__':
    run_cli(main)
