"""The run folder save/<name>: its name, the no-clobber rule, and the config and command line it keeps."""
import datetime
import os
import shlex
import shutil
import sys
from typing import Any, Dict, Optional, Sequence

import yaml

from utils.atomic import atomic_open
from utils.errors import UserError


def run_name(config_path: Optional[str], name: Optional[str], tag: Optional[str],
             stored_name: Optional[str] = None) -> str:
    """--name, else the config file's stem, else the resumed run's name; '_<tag>' appended if given."""
    if name is None:
        if config_path is not None:
            name = os.path.splitext(os.path.basename(config_path))[0]
        elif stored_name is not None:
            return stored_name if tag is None else f"{stored_name}_{tag}"
        else:
            raise UserError("cannot name the run: give --config or --name")
    if not name or name in ('.', '..') or os.sep in name:
        raise UserError(f"bad run name {name!r}: a plain folder name is needed (use --save-root for the parent)")
    return name if tag is None else f"{name}_{tag}"


def check_run_dir(path: str, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run in a folder that already holds one, unless --resume / --overwrite."""
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise UserError(f"{path} exists and is not a folder")
    if resuming or overwrite or not os.listdir(path):
        return
    last = os.path.join(path, 'epoch-last.pth')
    hint = f"continue it with --resume {last}" if os.path.exists(last) else "continue it with --resume CKPT"
    raise UserError(f"{path} already holds a run; {hint}, choose another --name / --tag, "
                    f"or pass --overwrite to delete it")


def create_run_dir(path: str, overwrite: bool, resuming: bool) -> None:
    """Make the folder (deleting an old one only for --overwrite without --resume)."""
    if overwrite and not resuming and os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)


def is_fresh(path: str) -> bool:
    """True if a run starting in `path` would create the folder (absent or empty)."""
    return not os.path.isdir(path) or not os.listdir(path)


def remove_failed_start(path: str) -> bool:
    """Delete the folder of a start that failed before writing any checkpoint, so the same command works once fixed.

    Only for a folder this start created; one holding a checkpoint (*.pth) is always kept. True if removed.
    """
    if not os.path.isdir(path) or any(f.endswith('.pth') for f in os.listdir(path)):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.exists(path)


def write_run_files(path: str, cfg: Dict[str, Any], script: str, argv: Sequence[str]) -> None:
    """config.yaml (the resolved config of this start) and command.txt (one line per start)."""
    with atomic_open(os.path.join(path, 'config.yaml'), 'w') as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    stamp = datetime.datetime.now().isoformat(timespec='seconds')
    env = f"WORLD_SIZE={os.environ['WORLD_SIZE']} " if 'WORLD_SIZE' in os.environ else ''
    with open(os.path.join(path, 'command.txt'), 'a') as f:
        f.write(f"{stamp} {env}{shlex.join([sys.executable, script, *argv])}\n")
