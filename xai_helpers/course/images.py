"""Sample photos and robust image loading.

``load_image`` accepts a sample name, a path, raw bytes or a PIL image and
always returns an upright 8-bit RGB ``PIL.Image``: EXIF orientation is
honoured, and grayscale, RGBA, palette, CMYK and 16-bit images are converted.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DATA_DIR", "IMAGE_DIR", "SAMPLES", "load_image", "sample_path", "MAX_PIXELS", "VARIANTS", "photo_variant"]

DATA_DIR = Path(os.environ.get("XAI_HELPERS_DATA", Path(__file__).resolve().parents[2] / "data"))
IMAGE_DIR = DATA_DIR / "images"
_SUFFIXES = (".png", ".jpg", ".jpeg")

# Refuse anything larger than 64 megapixels: a 'decompression bomb' of a few
# kilobytes can otherwise expand to gigabytes in memory.
MAX_PIXELS = 64_000_000


def _sample_names() -> list[str]:
    if not IMAGE_DIR.is_dir():
        return []
    return sorted(p.stem for p in IMAGE_DIR.iterdir() if p.suffix.lower() in _SUFFIXES)


SAMPLES: list[str] = _sample_names()


def sample_path(name: str) -> Path:
    """Path of the sample photo called ``name`` (see ``SAMPLES``)."""
    for suffix in _SUFFIXES:
        path = IMAGE_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no sample image called {name!r}; samples are: {', '.join(SAMPLES)}")


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: rescale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        arr = arr / (65535.0 if hi > 255 else 255.0) * 255.0
        img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info) or img.mode == "LA":
        # Composite on white so transparent pixels don't become black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _open(source, label: str) -> Image.Image:
    # Our own limit is checked on the header, before any pixel is decoded;
    # Pillow's global Image.MAX_IMAGE_PIXELS belongs to the caller and stays as it is.
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than refuses) just above its own limit: refuse too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"{label} is too large ({img.width}x{img.height}); the limit is {MAX_PIXELS:,} pixels")
            img.load()
            return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{label} is too large to open safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ValueError(f"{label} is not a readable image: its contents are in no image format Pillow knows "
                         "(PNG, JPEG, GIF, BMP, TIFF, WebP, ...)") from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{label} is not a readable image: the data is damaged or cut short") from exc


def load_image(source) -> Image.Image:
    """Load an image as 8-bit RGB.

    Args:
        source: a sample name from ``SAMPLES``, a path, ``bytes`` of an encoded
            image, or a ``PIL.Image``.

    Raises:
        FileNotFoundError: a path or sample name that does not exist.
        ValueError: data that is not a readable image, or one over ``MAX_PIXELS``.
    """
    if isinstance(source, Image.Image):
        if source.width * source.height > MAX_PIXELS:
            raise ValueError(f"image is too large ({source.width}x{source.height}); the limit is {MAX_PIXELS:,} pixels")
        return _to_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError("the uploaded data is empty, not a readable image")
        return _open(io.BytesIO(bytes(source)), "the data")
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text in SAMPLES:
            return _open(sample_path(text), f"sample {text!r}")
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"no image file at {text!r} and no sample of that name; samples are: {', '.join(SAMPLES)}"
            )
        return _open(path, f"file {text!r}")
    raise ValueError(
        f"cannot load an image from {type(source).__name__}; pass a sample name, a path, bytes or a PIL image"
    )


# Lesson 06's extra photos: transformations that keep what the photo shows. "crop" keeps the
# middle 80% of each side (the object of these photos is in the middle); "mirror" flips left-right.
VARIANTS = ("original", "mirror", "crop")


def photo_variant(name: str, variant: str = "original") -> Image.Image:
    """A sample photo (or any ``load_image`` source) as it is, mirrored left-right, or cropped to its middle 80%."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    image = load_image(name)
    if variant == "mirror":
        return ImageOps.mirror(image)
    if variant == "crop":
        w, h = image.size
        return image.crop((round(0.1 * w), round(0.1 * h), round(0.9 * w), round(0.9 * h)))
    return image
