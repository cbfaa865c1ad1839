"""Makes assets/astronaut.png, the bundled real photograph, from scikit-image's copy of the NASA original.

    pip download --no-deps scikit-image -d /tmp/skimage && unzip -o /tmp/skimage/*.whl 'skimage/data/astronaut.png' -d /tmp/skimage
    python assets/make_photo.py /tmp/skimage/skimage/data/astronaut.png

The 512 x 512 source is downscaled to 192 x 192 with the MATLAB-style bicubic (antialiased) resize.
"""
import hashlib
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.imresize import imresize  # noqa: E402

# scikit-image 0.26's skimage/data/_registry.py: the file this script was made from
SOURCE_SHA256 = '88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5'
SIZE = 192


def make_photo(source: str) -> Image.Image:
    """The astronaut photograph downscaled to SIZE x SIZE (uint8 RGB)."""
    digest = hashlib.sha256(open(source, 'rb').read()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{source}: sha256 {digest}, expected scikit-image's astronaut.png {SOURCE_SHA256}")
    img = torch.from_numpy(np.asarray(Image.open(source).convert('RGB')).copy()).permute(2, 0, 1)
    return Image.fromarray(imresize(img, size=(SIZE, SIZE)).permute(1, 2, 0).numpy())


if __name__ == '__main__':
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'astronaut.png')
    make_photo(sys.argv[1]).save(out, optimize=True)
    print(out)
