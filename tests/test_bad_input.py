"""Bad input gets a clear ValueError / FileNotFoundError that names the problem and the valid choices."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import xai_helpers as xh

from .conftest import all_hooks

METHODS = list(xh.METHODS.values())
LAYER_METHODS = [m for m in METHODS if m.needs_layer]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("shape", [(3, 16, 16), (16, 16), (1, 1, 3, 16, 16)])
def test_x_not_4d(method, small_cnn, shape):
    with pytest.raises(ValueError, match=r"4-D \(N, 3, H, W\)"):
        method(small_cnn, torch.randn(shape), small_cnn.features[5])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_x_not_a_float_tensor(method, small_cnn):
    with pytest.raises(ValueError, match="floating-point"):
        method(small_cnn, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), small_cnn.features[5])
    with pytest.raises(ValueError, match="torch.Tensor"):
        method(small_cnn, np.zeros((1, 3, 16, 16), np.float32), small_cnn.features[5])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("target", [5, -1, [0, 99], 10**9])
def test_target_out_of_range(method, small_cnn, target):
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"out of range; valid classes are 0\.\.4"):
        method(small_cnn, x, small_cnn.features[5], target=target)
    assert all_hooks(small_cnn) == 0


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
@pytest.mark.parametrize("target", [[1], [1, 2, 3], torch.tensor([0, 1, 2])])
def test_wrong_number_of_targets(method, small_cnn, target):
    with pytest.raises(ValueError, match="got .* targets for a batch of 2 images"):
        method(small_cnn, torch.randn(2, 3, 16, 16), small_cnn.features[5], target=target)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_target_wrong_type(method, small_cnn):
    with pytest.raises(ValueError, match="target must be"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], target="cat")
    with pytest.raises(ValueError, match="not a bool"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], target=True)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.slug)
def test_targets_accept_ints_tensors_numpy(method, small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = method(small_cnn, x, small_cnn.features[5], target=[1, 3])
    for target in ((1, 3), torch.tensor([1, 3]), np.array([1, 3])):
        torch.testing.assert_close(method(small_cnn, x, small_cnn.features[5], target=target), ref)
    torch.testing.assert_close(
        method(small_cnn, x, small_cnn.features[5], target=np.int64(2)),
        method(small_cnn, x, small_cnn.features[5], target=2),
    )


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_not_in_model(method, small_cnn):
    with pytest.raises(ValueError, match="not a submodule of the model"):
        method(small_cnn, torch.randn(1, 3, 16, 16), nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_never_runs(method, small_cnn):
    small_cnn.unused = nn.Conv2d(12, 12, 1)
    with pytest.raises(ValueError, match="never ran in the forward pass"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.unused)
    assert all_hooks(small_cnn) == 0


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_that_runs_twice(method):
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    model = Shared()
    with pytest.raises(ValueError, match="ran 2 times"):
        method(model, torch.randn(1, 3, 8, 8), model.conv)


@pytest.mark.parametrize("method", LAYER_METHODS, ids=lambda m: m.slug)
def test_layer_with_non_spatial_output(method, small_cnn):
    with pytest.raises(ValueError, match=r"\(N, C, h, w\) feature map"):
        method(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.fc)


def test_score_cam_options(small_cnn):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="score must be one of"):
        xh.score_cam(small_cnn, x, small_cnn.features[5], score="logits")
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        xh.score_cam(small_cnn, x, small_cnn.features[5], batch_size=0)


def test_cam_with_wrong_fc(small_cnn):
    with pytest.raises(ValueError, match="fc must be an nn.Linear with 12 inputs .* and 5 outputs"):
        xh.cam(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], fc=nn.Linear(7, 5))
    with pytest.raises(ValueError, match=r"got Linear\(12, 9\)"):
        xh.cam(small_cnn, torch.randn(1, 3, 16, 16), small_cnn.features[5], fc=nn.Linear(12, 9))


def test_load_model_unknown_name():
    with pytest.raises(ValueError, match=r"choose one of \['efficientnet_lite0', 'resnet50'\]"):
        xh.load_model("vgg16")


# --- images -----------------------------------------------------------------


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_bytes_that_are_not_an_image():
    with pytest.raises(ValueError, match="not a readable image"):
        xh.load_image(b"this is a text file, not a photo")
    with pytest.raises(ValueError, match="empty"):
        xh.load_image(b"")


def test_truncated_file(tmp_path):
    data = (xh.sample_path("chelsea")).read_bytes()
    for cut in (len(data) // 2, 40):
        with pytest.raises(ValueError, match="not a readable image"):
            xh.load_image(data[:cut])
        path = tmp_path / f"cut{cut}.png"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable image"):
            xh.load_image(path)


def test_missing_path_and_unknown_sample():
    with pytest.raises(FileNotFoundError, match="samples are: .*chelsea"):
        xh.load_image("/no/such/photo.jpg")
    with pytest.raises(FileNotFoundError, match="no sample image called 'dog'"):
        xh.sample_path("dog")


def test_unsupported_source_type():
    with pytest.raises(ValueError, match="pass a sample name, a path, bytes or a PIL image"):
        xh.load_image(42)


def test_decompression_bomb():
    bomb = _png(Image.new("1", (9000, 8000)))  # 72 megapixels in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="too large"):
        xh.load_image(bomb)
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit does not rely on Pillow's global one
    try:
        with pytest.raises(ValueError, match="too large"):
            xh.load_image(bomb)
    finally:
        Image.MAX_IMAGE_PIXELS = before


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1", "I"])
def test_modes_are_converted_to_rgb(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10) * 500)
    else:
        img = rgb.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I") else "PNG"
    for source in (img, _png(img, fmt)):
        out = xh.load_image(source)
        assert out.mode == "RGB" and out.size == (10, 12)
    if mode == "I;16":  # 16-bit values are rescaled from 0..65535, not clipped to white
        values = np.asarray(xh.load_image(img))[..., 0]
        assert values.min() == 0 and values.max() == round(59500 / 65535 * 255) and len(np.unique(values)) > 100


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert xh.load_image(img).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_honoured():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = xh.load_image(_png(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    arr = np.asarray(out).mean(-1)
    assert arr[:20].mean() > 200 and arr[20:].mean() < 50  # the white half is now on top
