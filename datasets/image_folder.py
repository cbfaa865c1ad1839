"""Folders of images, kept as uint8 (DIV2K's 800 images hold ~5.6 GB in memory, not 4x that)."""
import hashlib
import json
import os
from typing import List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.registry import register
from utils.errors import UserError
from utils.image import read_rgb_u8

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')
CACHE_MODES = ('none', 'in_memory', 'bin')


def list_images(root_path: str, split_file: Optional[str] = None, split_key: Optional[str] = None,
                first_k: Optional[int] = None) -> List[str]:
    """Sorted image file names of a folder (or those a JSON split file lists under split_key)."""
    if not os.path.isdir(root_path):
        raise UserError(f"dataset folder not found: {root_path}")
    if split_file is None:
        names = sorted(f for f in os.listdir(root_path) if f.lower().endswith(IMAGE_EXTS))
    else:
        try:
            with open(split_file) as f:
                names = json.load(f)[split_key]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot read split {split_key!r} of {split_file}: {type(e).__name__}") from None
    if first_k is not None:
        if isinstance(first_k, bool) or not isinstance(first_k, int) or first_k < 1:
            raise UserError(f"first_k must be a positive integer (or null for all images), got {first_k!r}")
        names = names[:first_k]
    if not names:
        raise UserError(f"no images in {root_path}" if split_file is None
                        else f"split {split_key!r} of {split_file} lists no images")
    return names


@register('image-folder')
class ImageFolder(Dataset):
    """Images of a folder as uint8 tensors (3, H, W); each is seen `repeat` times per epoch."""

    def __init__(self, root_path: str, split_file: Optional[str] = None, split_key: Optional[str] = None,
                 first_k: Optional[int] = None, repeat: int = 1, cache: str = 'none'):
        if cache not in CACHE_MODES:
            raise UserError(f"cache must be one of {', '.join(CACHE_MODES)}, not {cache!r}")
        if not isinstance(repeat, int) or repeat < 1:
            raise UserError(f"repeat must be a positive integer, not {repeat!r}")
        self.repeat = repeat
        self.cache = cache
        names = list_images(root_path, split_file, split_key, first_k)
        paths = [os.path.join(root_path, n) for n in names]
        if cache == 'in_memory':
            self.items = [read_rgb_u8(p) for p in paths]
        elif cache == 'bin':
            self.items = [self._bin_file(root_path, p) for p in paths]
        else:
            self.items = paths

    @staticmethod
    def _bin_file(root_path: str, path: str) -> str:
        """Decoded copy of `path` as .npy in _bin_<folder> beside the folder, written once, atomically."""
        root = os.path.normpath(root_path)
        bin_root = os.path.join(os.path.dirname(root), '_bin_' + os.path.basename(root))
        try:
            os.makedirs(bin_root, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the bin cache {bin_root} ({e.strerror}); "
                            f"use cache: in_memory or none") from None
        stat = os.stat(path)
        tag = hashlib.sha1(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()[:8]
        bin_file = os.path.join(bin_root, f"{os.path.splitext(os.path.basename(path))[0]}-{tag}.npy")
        if not os.path.exists(bin_file):
            # several processes (DDP ranks) may convert the same image: each writes its own temporary
            tmp = bin_file + f'.{os.getpid()}.tmp.npy'
            try:
                np.save(tmp, read_rgb_u8(path).numpy())
                os.replace(tmp, bin_file)
            except OSError as e:
                raise UserError(f"cannot write the bin cache {bin_file} ({e.strerror}); "
                                f"use cache: in_memory or none") from None
        return bin_file

    def __len__(self) -> int:
        return len(self.items) * self.repeat

    def __getitem__(self, idx: int) -> torch.Tensor:
        item = self.items[idx % len(self.items)]
        if self.cache == 'in_memory':
            return item
        if self.cache == 'bin':
            return torch.from_numpy(np.load(item))
        return read_rgb_u8(item)


@register('paired-image-folders')
class PairedImageFolders(Dataset):
    """Two folders whose sorted files correspond one to one (e.g. LR and HR): items are pairs."""

    def __init__(self, root_path_1: str, root_path_2: str, **kwargs):
        self.dataset_1 = ImageFolder(root_path_1, **kwargs)
        self.dataset_2 = ImageFolder(root_path_2, **kwargs)
        if len(self.dataset_1) != len(self.dataset_2):
            raise UserError(f"{root_path_1} and {root_path_2} hold different numbers of images "
                            f"({len(self.dataset_1)} vs {len(self.dataset_2)})")

    def __len__(self) -> int:
        return len(self.dataset_1)

    def __getitem__(self, idx: int):
        return self.dataset_1[idx], self.dataset_2[idx]
