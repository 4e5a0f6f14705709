"""Finding images and decoding the awkward ones: EXIF rotation, greyscale, CMYK, lying names."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twelve.features.extract.images import (
    ImageListError,
    ImageLoadError,
    ImageSource,
    collect_images,
    image_id_for,
    load_image,
    read_image_list,
)


def _gradient(width: int = 40, height: int = 24) -> np.ndarray:
    """An RGB image whose every pixel tells where it is (so rotations are detectable)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 6, ys * 10, np.full_like(xs, 128)], axis=2).astype(np.uint8)


def _load(path: Path, **kwargs: bool) -> np.ndarray:
    return load_image(ImageSource(path.stem, path), **kwargs).rgb


def test_plain_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    pixels = _gradient()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    loaded = load_image(ImageSource("a", tmp_path / "a.png"))
    assert loaded.rgb.dtype == np.uint8
    np.testing.assert_array_equal(loaded.rgb, pixels)
    assert (loaded.width, loaded.height, loaded.file_format) == (40, 24, "PNG")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = _gradient()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif.tobytes())
    upright = _load(tmp_path / "phone.png")
    assert upright.shape == (40, 24, 3)
    np.testing.assert_array_equal(upright, np.rot90(pixels, k=-1))
    raw = _load(tmp_path / "phone.png", apply_exif=False)
    np.testing.assert_array_equal(raw, pixels)


def test_greyscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    grey = _gradient()[:, :, 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    rgb = _load(tmp_path / "g.png")
    assert rgb.shape == (24, 40, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = _load(tmp_path / "deep.png")
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 100, 255])


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=95)
    loaded = load_image(ImageSource("print", tmp_path / "print.jpg"))
    assert loaded.file_format == "JPEG"
    red, green, blue = loaded.rgb[4, 8].astype(int)
    assert red > 200
    assert green < 60
    assert blue < 60


def test_jpeg_named_png_is_decoded_by_content(tmp_path: Path) -> None:
    pixels = _gradient()
    Image.fromarray(pixels).save(tmp_path / "liar.png", format="JPEG", quality=100)
    loaded = load_image(ImageSource("liar", tmp_path / "liar.png"))
    assert loaded.file_format == "JPEG"
    assert np.abs(loaded.rgb.astype(int) - pixels).mean() < 3


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "1"])
def test_other_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    Image.fromarray(_gradient()).convert(mode).save(tmp_path / "m.png")
    assert _load(tmp_path / "m.png").shape == (24, 40, 3)


def test_corrupt_truncated_empty_and_missing_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "noise.jpg").write_bytes(b"\x00\x01 definitely not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(_gradient(200, 200)).save(buffer, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for name in ("noise.jpg", "empty.png", "cut.jpg", "missing.jpg"):
        with pytest.raises(ImageLoadError) as caught:
            _load(tmp_path / name)
        assert name in str(caught.value)


def test_folder_listing_is_sorted_and_filters_by_suffix(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpeg").write_bytes(b"x")
    assert [s.image_id for s in collect_images(tmp_path)] == ["a", "b"]
    assert [s.image_id for s in collect_images(tmp_path, recursive=True)] == ["a", "b", "c"]


def test_duplicate_ids_in_a_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"x")
    (tmp_path / "x.png").write_bytes(b"x")
    with pytest.raises(ImageListError, match="'x'"):
        collect_images(tmp_path)


def test_list_file_with_relative_paths_and_explicit_ids(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text(
        "# images for the test\nimgs/COCO_val2014_000000000139.jpg\n\nimgs/other.jpg\tcustom-id\n"
    )
    sources = read_image_list(tmp_path / "list.txt", id_style="number")
    assert [s.image_id for s in sources] == ["139", "custom-id"]
    assert sources[0].path == tmp_path / "imgs" / "COCO_val2014_000000000139.jpg"


def test_list_file_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a.jpg\ta\textra\n")
    with pytest.raises(ImageListError, match=r"list.txt:1"):
        read_image_list(tmp_path / "list.txt")


def test_id_styles() -> None:
    assert image_id_for(Path("COCO_train2014_000000000009.jpg"), "number") == "9"
    assert image_id_for(Path("2342.jpg"), "stem") == "2342"
    with pytest.raises(ImageListError, match="digits"):
        image_id_for(Path("cat.jpg"), "number")
