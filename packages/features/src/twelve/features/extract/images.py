"""Finding the images to extract and decoding them the way a person sees them (RGB, upright).

Real image folders are messy: phone photos stored sideways with an EXIF orientation tag,
greyscale and CMYK JPEGs, 16-bit PNGs, files whose extension lies about their format
(a JPEG named `.png`), truncated downloads. Decoding goes by content, never by extension, and
every failure becomes an `ImageLoadError` naming the file, so a run can report and skip it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
IdStyle = Literal["stem", "number"]
_TRAILING_NUMBER = re.compile(r"(\d+)$")


class ImageLoadError(Exception):
    """An image file could not be read or decoded; the run reports it and moves on."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ImageListError(ValueError):
    """The list of images to extract is malformed (bad line, duplicate id, missing folder)."""


@dataclass(frozen=True)
class ImageSource:
    """One image to extract: the id its record is stored under and the file it comes from."""

    image_id: str
    path: Path


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: RGB uint8 pixels (H, W, 3), upright, plus the format found in the file."""

    source: ImageSource
    rgb: np.ndarray
    file_format: str

    @property
    def width(self) -> int:
        """Width in pixels of the upright image (what boxes are measured against)."""
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels of the upright image."""
        return int(self.rgb.shape[0])


def image_id_for(path: Path, style: IdStyle) -> str:
    """The store id of an image file: its name without suffix, or that name's trailing number.

    `number` reproduces the original stores' keys: `COCO_val2014_000000000139.jpg` → "139",
    `2342.jpg` (Visual Genome) → "2342".
    """
    if style == "stem":
        return path.stem
    match = _TRAILING_NUMBER.search(path.stem)
    if match is None:
        raise ImageListError(f"{path}: --id-style number needs a name ending in digits")
    return str(int(match.group(1)))


def _check_unique(sources: list[ImageSource], origin: Path) -> list[ImageSource]:
    seen: dict[str, Path] = {}
    for source in sources:
        if source.image_id in seen:
            raise ImageListError(
                f"{origin}: image id {source.image_id!r} comes from both {seen[source.image_id]} "
                f"and {source.path}; rename one, or list them with explicit ids"
            )
        seen[source.image_id] = source.path
    return sources


def find_images(
    folder: Path, *, recursive: bool = False, id_style: IdStyle = "stem"
) -> list[ImageSource]:
    """Every image file (by suffix) in `folder`, sorted by path, with its store id."""
    if not folder.is_dir():
        raise ImageListError(f"{folder} is not a folder")
    candidates: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    paths = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return _check_unique([ImageSource(image_id_for(p, id_style), p) for p in paths], folder)


def read_image_list(list_file: Path, *, id_style: IdStyle = "stem") -> list[ImageSource]:
    """Images named in a text file: one `PATH` or `PATH<TAB>IMAGE_ID` per line.

    Relative paths are relative to the list file's folder; blank lines and lines starting
    with `#` are ignored. An explicit id overrides `id_style`.
    """
    sources: list[ImageSource] = []
    base = list_file.parent
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ImageListError(f"{list_file}: cannot read the image list ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) > 2 or not fields[0].strip():
            raise ImageListError(
                f"{list_file}:{number}: expected `PATH` or `PATH<TAB>IMAGE_ID`, got {line!r}"
            )
        path = base / fields[0].strip()
        image_id = fields[1].strip() if len(fields) == 2 else image_id_for(path, id_style)
        if not image_id:
            raise ImageListError(f"{list_file}:{number}: empty image id in {line!r}")
        sources.append(ImageSource(image_id, path))
    return _check_unique(sources, list_file)


def collect_images(
    source: Path, *, recursive: bool = False, id_style: IdStyle = "stem"
) -> list[ImageSource]:
    """The images of a folder, or of a list file (see `read_image_list`)."""
    if source.is_dir():
        return find_images(source, recursive=recursive, id_style=id_style)
    if source.is_file():
        return read_image_list(source, id_style=id_style)
    raise ImageListError(f"{source} does not exist (expected an image folder or a list file)")


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8, scaling high-bit-depth greyscale rather than clipping."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode != "RGB":
        # CMYK (also Adobe's inverted CMYK JPEGs, which Pillow undoes on decode), L, LA, P, PA,
        # 1, YCbCr, RGBA: Pillow's conversion; alpha is dropped as OpenCV's imread does.
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(source: ImageSource, *, apply_exif: bool = True) -> LoadedImage:
    """Decode one image by its content (not its extension) to upright RGB uint8.

    Raises `ImageLoadError` naming the file when it is missing, not an image, truncated or
    otherwise undecodable.
    """
    path = source.path
    try:
        with Image.open(path) as image:
            file_format = image.format or "unknown"
            image.load()  # decode now: truncated files fail here, inside the handler
            if apply_exif:
                image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image (content matches no known format)") from None
    except Image.DecompressionBombError as error:
        raise ImageLoadError(path, f"refused as a decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(path, f"cannot decode ({error})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageLoadError(path, f"decoded to an unusable array of shape {rgb.shape}")
    return LoadedImage(source=source, rgb=rgb, file_format=file_format)
