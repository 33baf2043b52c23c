"""Image reading and writing: modes, EXIF orientation, resizing, atomic saves, settings chunks."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from jaxdream import media
from jaxdream.errors import MediaError, SettingsError


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def rgb_pattern(height: int = 6, width: int = 10) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------


def test_load_png_exact(tmp_path):
    pixels = rgb_pattern()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    arr = media.load_image(tmp_path / "a.png")
    assert arr.shape == (6, 10, 3) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, pixels.astype(np.float32))


def test_load_jpeg(tmp_path):
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[:, :12] = (200, 40, 10)
    pixels[:, 12:] = (20, 60, 220)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    arr = media.load_image(str(tmp_path / "a.jpg"))
    assert arr.shape == (16, 24, 3) and arr.dtype == np.float32
    assert 0 <= arr.min() and arr.max() <= 255
    np.testing.assert_allclose(arr[4, 4], (200, 40, 10), atol=12)
    np.testing.assert_allclose(arr[4, 20], (20, 60, 220), atol=12)


@pytest.mark.parametrize("orientation, top, bottom", [(6, "red", "blue"), (8, "blue", "red")])
def test_exif_orientation_is_applied(tmp_path, orientation, top, bottom):
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    pixels = np.zeros((20, 40, 3), np.uint8)  # stored landscape: left red, right blue
    pixels[:, :20] = colours["red"]
    pixels[:, 20:] = colours["blue"]
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: 6 = rotate 90 CW to display, 8 = 90 CCW
    Image.fromarray(pixels).save(tmp_path / "o.jpg", exif=exif, quality=95)
    arr = media.load_image(tmp_path / "o.jpg")
    assert arr.shape == (40, 20, 3)
    np.testing.assert_allclose(arr[5, 10], colours[top], atol=20)
    np.testing.assert_allclose(arr[34, 10], colours[bottom], atol=20)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = media.load_image(tmp_path / "a.png")
    assert arr.shape == (1, 3, 3)
    np.testing.assert_array_equal(arr[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(arr[0, 1], (10, 20, 30))
    np.testing.assert_allclose(arr[0, 2], (127, 127, 127), atol=1)


def test_palette_transparency_and_la(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    arr = media.load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(arr[0], [(255, 255, 255), (200, 100, 50)])

    Image.fromarray(np.array([[[40, 0], [40, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    arr = media.load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(arr[0], [(255, 255, 255), (40, 40, 40)])


def test_grayscale_8_bit(tmp_path):
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    arr = media.load_image(tmp_path / "g.png")
    assert arr.shape == (2, 2, 3) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, np.repeat(gray[..., None], 3, axis=-1).astype(np.float32))


@pytest.mark.parametrize("values", [[0, 257 * 100, 65535], [0, 257, 514]])  # dark images too
def test_grayscale_16_bit(tmp_path, values):
    gray = np.array([values], np.uint16)
    image = Image.fromarray(gray)
    assert image.mode == "I;16"
    image.save(tmp_path / "g16.png")
    arr = media.load_image(tmp_path / "g16.png")
    assert arr.shape == (1, 3, 3) and arr.dtype == np.float32
    np.testing.assert_allclose(arr[0, :, 0], np.array(values) / 257, atol=1e-3)
    assert np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2])


def test_size_resizes_longest_side(tmp_path):
    Image.fromarray(np.full((100, 50, 3), 77, np.uint8)).save(tmp_path / "tall.png")
    Image.fromarray(np.full((30, 90, 3), 77, np.uint8)).save(tmp_path / "wide.png")
    tall = media.load_image(tmp_path / "tall.png", size=40)
    assert tall.shape == (40, 20, 3) and tall.dtype == np.float32
    np.testing.assert_allclose(tall, 77, atol=1e-3)
    assert media.load_image(tmp_path / "wide.png", size=180).shape == (60, 180, 3)  # upscaling too
    with pytest.raises(SettingsError):
        media.load_image(tmp_path / "wide.png", size=0)


@pytest.mark.parametrize("height, width, longest, expected", [
    (100, 300, 50, (17, 50)),
    (300, 100, 50, (50, 17)),
    (480, 640, 512, (384, 512)),
    (10, 10, 7, (7, 7)),
    (1, 1000, 10, (1, 10)),  # never below 1 px
    (3, 4, 4, (3, 4)),
    (2, 3, 300, (200, 300)),
])
def test_fit_size(height, width, longest, expected):
    assert media.fit_size(height, width, longest) == expected


@pytest.mark.parametrize("longest", [0, -5])
def test_fit_size_rejects_non_positive(longest):
    with pytest.raises(SettingsError, match="positive"):
        media.fit_size(10, 10, longest)


def test_resize():
    image = np.random.default_rng(1).uniform(0, 255, (7, 9, 3)).astype(np.float32)
    same = media.resize(image, (7, 9))
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, image)
    assert media.resize(image.astype(np.float64), (7, 9)).dtype == np.float32
    flat = np.full((8, 8, 3), 42.5, np.float32)
    for method in ("bicubic", "bilinear"):
        out = media.resize(flat, (5, 13), method)
        assert out.shape == (5, 13, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, 42.5, atol=1e-3)
    # channels are resized independently
    image = np.zeros((4, 4, 3), np.float32)
    image[..., 1] = 255
    np.testing.assert_allclose(media.resize(image, (2, 2), "bilinear"), [[[0, 255, 0]] * 2] * 2, atol=1e-3)


# --------------------------------------------------------------------------------------------
# load_image errors
# --------------------------------------------------------------------------------------------


def _png_bytes(tmp_path) -> bytes:
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "full.png")
    return (tmp_path / "full.png").read_bytes()


@pytest.mark.parametrize("kind", ["missing", "folder", "random bytes", "empty", "text",
                                  "truncated 20", "truncated 60", "truncated half", "truncated -200"])
def test_load_image_errors(tmp_path, kind):
    path = tmp_path / "input.png"
    if kind == "folder":
        path.mkdir()
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(3).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, not an image\n")
    elif kind.startswith("truncated"):
        data = _png_bytes(tmp_path)
        cut = {"20": 20, "60": 60, "half": len(data) // 2, "-200": len(data) - 200}[kind.split()[1]]
        path.write_bytes(data[:cut])
    with pytest.raises(MediaError) as exc:
        media.load_image(path)
    message = str(exc.value)
    assert str(path) in message and "\n" not in message


# --------------------------------------------------------------------------------------------
# save_image, read_settings, atomic_write
# --------------------------------------------------------------------------------------------


def test_save_png_round_trip_with_settings(tmp_path):
    image = rgb_pattern().astype(np.float32)
    image[0, 0] = (10.4, 10.6, -5.0)
    image[0, 1] = (300.0, 254.5, 0.49)
    settings = {"layer": "inception_4c/output", "octaves": 4, "octave_scale": 1.4,
                "layers": ["relu4_2", "relu5_1"], "seed": None, "nested": {"a": [1, 2]}}
    out = media.save_image(tmp_path / "out.png", image, settings)
    assert out == tmp_path / "out.png"
    assert listing(tmp_path) == ["out.png"]  # no temporary file left behind
    assert (out.stat().st_mode & 0o777) == 0o644
    loaded = media.load_image(out)
    np.testing.assert_array_equal(loaded, media.to_uint8(image).astype(np.float32))
    np.testing.assert_array_equal(loaded[0, 0], (10, 11, 0))
    np.testing.assert_array_equal(loaded[0, 1], (255, 254, 0))  # round half to even, clipped
    assert media.read_settings(out) == settings
    with Image.open(out) as img:
        assert img.text["jaxdream:octaves"] == "4"
        assert img.text["jaxdream:layer"] == '"inception_4c/output"'


def test_save_overwrites_atomically(tmp_path):
    target = tmp_path / "out.png"
    media.save_image(target, np.zeros((4, 4, 3)), {"run": 1})
    media.save_image(target, np.full((5, 3, 3), 255.0), {"run": 2})
    assert listing(tmp_path) == ["out.png"]
    assert media.load_image(target).shape == (5, 3, 3)
    assert media.read_settings(target) == {"run": 2}


@pytest.mark.parametrize("suffix", [".jpg", ".JPEG", ".bmp", ".tif", ".webp"])
def test_save_other_formats(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    media.save_image(target, np.full((8, 8, 3), 128.0), {"ignored": True})
    assert listing(tmp_path) == [target.name]
    np.testing.assert_allclose(media.load_image(target), 128, atol=3)
    assert media.read_settings(target) == {}


def test_read_settings_of_plain_png_and_bad_files(tmp_path):
    Image.fromarray(rgb_pattern()).save(tmp_path / "plain.png")
    assert media.read_settings(tmp_path / "plain.png") == {}
    info = PngImagePlugin.PngInfo()
    info.add_text("jaxdream", "{not json")
    Image.fromarray(rgb_pattern()).save(tmp_path / "broken.png", pnginfo=info)
    for name in ("broken.png", "missing.png"):
        with pytest.raises(MediaError, match=name):
            media.read_settings(tmp_path / name)
    (tmp_path / "noise.png").write_bytes(b"\x00" * 100)
    with pytest.raises(MediaError, match="noise.png"):
        media.read_settings(tmp_path / "noise.png")


@pytest.mark.parametrize("name", ["out.xyz", "out", "out.gif", "out.png.part"])
def test_save_unknown_suffix(tmp_path, name):
    with pytest.raises(MediaError, match="unknown output type"):
        media.save_image(tmp_path / name, np.zeros((2, 2, 3)))
    assert listing(tmp_path) == []


def test_save_into_missing_folder(tmp_path):
    target = tmp_path / "missing" / "out.png"
    with pytest.raises(MediaError, match="does not exist"):
        media.save_image(target, np.zeros((2, 2, 3)))
    assert not target.parent.exists()


def test_save_under_a_regular_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / "out.png"
    with pytest.raises(MediaError, match=str(target)):
        media.save_image(target, np.zeros((2, 2, 3)))
    assert listing(tmp_path) == ["file.txt"]


def test_save_into_read_only_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permission bits do not stop writes")
        with pytest.raises(MediaError, match="cannot write"):
            media.save_image(folder / "out.png", np.zeros((2, 2, 3)))
        assert listing(folder) == []
    finally:
        folder.chmod(0o700)


def test_check_output(tmp_path):
    assert media.check_output(tmp_path / "a.PNG") == tmp_path / "a.PNG"
    assert media.check_output(tmp_path / "v.mp4", {".mp4": "video"}) == tmp_path / "v.mp4"
    with pytest.raises(MediaError, match=r"use one of \.mp4"):
        media.check_output(tmp_path / "a.png", {".mp4": "video"})
    assert listing(tmp_path) == []


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.png"

    def half_then_fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    with pytest.raises(MediaError, match=f"{target}: cannot write \\(No space left on device\\)"):
        media.atomic_write(target, half_then_fail)
    assert listing(tmp_path) == []


def test_atomic_write_keeps_the_old_file_on_any_failure(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def boom(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        media.atomic_write(target, boom)
    assert listing(tmp_path) == ["out.png"]
    assert target.read_bytes() == b"previous"


def test_atomic_write_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    media.atomic_write("rel.bin", lambda tmp: open(tmp, "wb").close() or None)
    assert listing(tmp_path) == ["rel.bin"]
