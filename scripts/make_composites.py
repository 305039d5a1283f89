"""Make the composite sample images from the photos in data/images.

* cat_and_coffee.png: Chelsea the cat and the espresso side by side, for
  class-discriminative maps (explain 'cat' and 'espresso' on one image);
* two_cats.png: Chelsea twice, the second mirrored and smaller: the
  multiple-instance case Grad-CAM++ claims to handle better than Grad-CAM.

Each object is a square crop scaled to half the canvas width and centred
vertically on a neutral grey canvas, so that the 224x224 model input sees it
undistorted. Run: python scripts/make_composites.py
"""

from pathlib import Path

from PIL import Image, ImageOps

IMAGES = Path(__file__).resolve().parent.parent / "data" / "images"
CANVAS = 448
GREY = (124, 124, 124)
# (left, top, right, bottom): square crops around the object.
CROPS = {"chelsea": (95, 0, 395, 300), "coffee": (110, 0, 510, 400)}


def crop(name: str, mirror: bool = False, size: int = CANVAS // 2) -> Image.Image:
    path = next(IMAGES.glob(f"{name}.*"))
    img = Image.open(path).convert("RGB").crop(CROPS[name]).resize((size, size), Image.LANCZOS)
    return ImageOps.mirror(img) if mirror else img


def compose(left: Image.Image, right: Image.Image) -> Image.Image:
    """Each image centred in its half of a grey square canvas."""
    canvas = Image.new("RGB", (CANVAS, CANVAS), GREY)
    half = CANVAS // 2
    for offset, img in ((0, left), (half, right)):
        canvas.paste(img, (offset + (half - img.width) // 2, (CANVAS - img.height) // 2))
    return canvas


def main() -> None:
    outputs = {
        "cat_and_coffee": compose(crop("chelsea"), crop("coffee")),
        "two_cats": compose(crop("chelsea"), crop("chelsea", mirror=True, size=150)),
    }
    for name, img in outputs.items():
        img.save(IMAGES / f"{name}.png", optimize=True)
        print(f"wrote {IMAGES / name}.png ({img.width}x{img.height})")


if __name__ == "__main__":
    main()
