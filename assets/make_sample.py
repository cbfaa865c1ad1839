"""Draws assets/sample.png, the bundled demo image (made for this project; public domain, CC0)."""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def make_sample(size=(192, 128), seed: int = 7) -> Image.Image:
    """A small synthetic scene with edges, text, textures and gradients at several scales."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([90 + 80 * yy / h, 140 + 60 * yy / h, 230 - 30 * yy / h], -1)
    img = Image.fromarray(sky.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([140, 10, 172, 42], fill=(255, 214, 90), outline=(255, 180, 40), width=2)
    # mountains: two sine ridges roughened by noise
    x = np.arange(w)
    ridge = 62 + 10 * np.sin(x / 17.0) + 6 * np.sin(x / 5.3 + 1) + rng.normal(0, 1.2, w)
    d.polygon([(0, h)] + [(x, float(ridge[x])) for x in range(w)] + [(w, h)], fill=(70, 95, 80))
    # grass texture: short strokes of varying green
    for _ in range(700):
        x, y = rng.uniform(0, w), rng.uniform(95, h)
        g = int(rng.uniform(110, 190))
        d.line([(x, y), (x + rng.normal(0, 1.5), y - rng.uniform(2, 6))], fill=(40, g, 50), width=1)
    # a house with a tiled roof and windows: straight and diagonal edges
    d.rectangle([22, 70, 70, 108], fill=(200, 190, 170), outline=(60, 40, 30))
    d.polygon([(16, 72), (46, 48), (76, 72)], fill=(160, 50, 40), outline=(80, 20, 20))
    for i in range(5):
        d.line([(16 + 6 * i, 72), (46, 48)], fill=(120, 35, 30))
    for x0 in (28, 52):
        d.rectangle([x0, 78, x0 + 10, 90], fill=(250, 240, 160), outline=(40, 30, 20))
        d.line([(x0 + 5, 78), (x0 + 5, 90)], fill=(40, 30, 20))
        d.line([(x0, 84), (x0 + 10, 84)], fill=(40, 30, 20))
    # fine stripes and rings: high frequencies that bicubic blurs
    for i in range(12):
        d.line([(96 + 3 * i, 88), (96 + 3 * i, 118)], fill=(30, 30, 30) if i % 2 else (235, 235, 235))
    for r in range(2, 15, 3):
        d.ellipse([150 - r, 100 - r, 150 + r, 100 + r], outline=(250, 250, 250))
    font = ImageFont.load_default()
    d.text((88, 52), "LIIF", fill=(255, 255, 255), font=font)
    d.text((89, 66), "x any", fill=(20, 20, 60), font=font)
    img = img.filter(ImageFilter.SMOOTH)
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 1.5, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).round().astype(np.uint8))


if __name__ == '__main__':
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sample.png')
    make_sample().save(out, optimize=True)
    print(out)
