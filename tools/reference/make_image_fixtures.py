#!/usr/bin/env python3
"""Reference outputs of Pillow's resampling and the CLIP / VL-Adapter / ViT image pipelines.

Writes tests/fixtures/data/image_reference.json (metadata, checksums, sampled pixels) and
tests/fixtures/data/image_reference.bin (raw uint8 RGB pixel blocks the JSON points into), computed from the
three photos in ../shared/assets/images (or $VLP_ASSETS/images). The photos themselves are not stored.

For each photo:
  * crop:      a 40x30 RGB block of the PIL-decoded photo, stored so the resize cases below run on exactly
               the input Pillow saw (the JPEG decoders of stb and libjpeg differ by a level or two);
  * resize:    Image.resize of that block (and of its 16x12 top-left corner for upscaling) with BICUBIC and
               BILINEAR: downscale, upscale, down in one axis / up in the other, and the two sides of
               Pillow 13's choice of which pass runs first;
  * full:      Image.resize of the whole decoded photo to 37x29 and to (width - 22)x2 (vertical pass
               first; BICUBIC only), BICUBIC and BILINEAR;
  * pipelines: clip (shorter side to 224 bicubic + centre crop 224, torchvision's rules), vladapter (224x224
               bicubic), vit (224x224 bilinear): sha256 and FNV-1a-64 of the 224x224x3 bytes, their sum, every 16th pixel,
               and for clip the normalised float32 values at a few positions (ToTensor + Normalize).

Run with the pinned Pillow:  tools/reference/.venv/bin/python tools/reference/make_image_fixtures.py
"""
import base64
import hashlib
import json
import os
import sys

import numpy as np
import PIL
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.environ.get("VLP_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "data")
PHOTOS = ["astronaut.png", "coffee.png", "rocket.jpg"]
# A textured 40x30 block of each photo (x, y), away from flat sky.
CROPS = {"astronaut.png": (200, 150), "coffee.png": (250, 160), "rocket.jpg": (300, 200)}
FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Blob:
    """Raw byte blocks appended to the .bin file; the JSON records offset and size."""

    def __init__(self):
        self.data = bytearray()

    def add(self, arr):
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        ref = {"offset": len(self.data), "shape": list(arr.shape)}
        self.data += arr.tobytes()
        return ref


def rgb(im):
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def torchvision_resize_size(w, h, size):
    # torchvision.transforms.functional.resize with an int size: shorter side -> size,
    # longer -> int(size * long / short).
    short, long = min(w, h), max(w, h)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def torchvision_center_crop(im, size):
    w, h = im.size
    assert w >= size and h >= size
    top = int(round((h - size) / 2.0))   # Python round: half to even
    left = int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size)), (top, left)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def pipeline_record(arr, blob):
    assert arr.shape == (224, 224, 3)
    return {
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
        "fnv1a64": f"{fnv1a64(arr.tobytes()):016x}",
        "sum": int(arr.astype(np.int64).sum()),
        "samples_every_16": blob.add(arr[::16, ::16, :]),
    }


def main():
    images_dir = os.path.join(ASSETS, "images")
    if not os.path.isdir(images_dir):
        sys.exit(f"assets not found at {images_dir} (set VLP_ASSETS)")
    blob = Blob()
    out = {"pillow_version": PIL.__version__, "generator": "tools/reference/make_image_fixtures.py",
           "binary": "image_reference.bin", "photos": {}}
    for name in PHOTOS:
        im = Image.open(os.path.join(images_dir, name))
        im.load()
        full = im.convert("RGB")
        w, h = full.size
        rec = {"mode": im.mode, "size": [w, h]}

        x0, y0 = CROPS[name]
        crop = full.crop((x0, y0, x0 + 40, y0 + 30))
        small = crop.crop((0, 0, 16, 12))
        rec["crop"] = {"x": x0, "y": y0, "pixels": blob.add(rgb(crop))}
        cases = []
        for fname, f in FILTERS.items():
            for label, src, size in [("down", crop, (13, 11)), ("up", small, (37, 29)),
                                     ("down_x_up_y", crop, (23, 41)), ("up_x_down_y", small, (41, 7)),
                                     # Pillow 13 passes vertically first iff the height loses more than
                                     # twice as many pixels as the width: 40x30 -> 34x17 (13 > 12) does,
                                     # 40x30 -> 33x16 (14 = 14) does not.
                                     ("vertical_first", crop, (34, 17)), ("order_tie", crop, (33, 16))]:
                res = src.resize(size, f)
                cases.append({"filter": fname, "kind": label, "input": "crop" if src is crop else "crop_16x12",
                              "size": list(size), "pixels": blob.add(rgb(res))})
            full_cases = [("full_down", (37, 29))]
            if fname == "bicubic":
                full_cases.append(("full_vertical_first", (w - 22, 2)))
            for label, size in full_cases:
                res = full.resize(size, f)
                cases.append({"filter": fname, "kind": label, "input": "full", "size": list(size),
                              "pixels": blob.add(rgb(res))})
        rec["resize"] = cases

        pipes = {}
        rw, rh = torchvision_resize_size(w, h, 224)
        clip_img, (top, left) = torchvision_center_crop(full.resize((rw, rh), Image.Resampling.BICUBIC), 224)
        clip_arr = rgb(clip_img)
        pipes["clip"] = dict(pipeline_record(clip_arr, blob), resized_size=[rw, rh], crop_top=top, crop_left=left)
        # ToTensor + Normalize in float32, at a few positions (c, y, x).
        x = clip_arr.astype(np.float32) / np.float32(255.0)
        mean = np.array(CLIP_MEAN, dtype=np.float32)
        std = np.array(CLIP_STD, dtype=np.float32)
        norm = (x - mean) / std
        positions = [(0, 0, 0), (1, 100, 37), (2, 223, 223), (0, 57, 181), (1, 13, 200), (2, 150, 3)]
        pipes["clip"]["normalized"] = [{"c": c, "y": yy, "x": xx, "value": float(norm[yy, xx, c])}
                                       for c, yy, xx in positions]
        pipes["vladapter"] = pipeline_record(rgb(full.resize((224, 224), Image.Resampling.BICUBIC)), blob)
        pipes["vit"] = pipeline_record(rgb(full.resize((224, 224), Image.Resampling.BILINEAR)), blob)
        rec["pipelines"] = pipes
        out["photos"][name] = rec

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "image_reference.bin"), "wb") as f:
        f.write(bytes(blob.data))
    with open(os.path.join(OUT_DIR, "image_reference.json"), "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(blob.data)} bytes of pixels and image_reference.json to {OUT_DIR}")


if __name__ == "__main__":
    main()
