"""What users touch, their photos: each upload checked and re-encoded before
a post is saved.

Nothing is stored as the uploader sent it. An upload is accepted only if
Pillow decodes it as a JPEG, PNG or WebP image within the byte and pixel
limits; it is then turned upright by its EXIF orientation, converted to
sRGB, shrunk to a bounded size and encoded afresh without any metadata (no
EXIF, GPS, XMP, ICC profile or comment leaves the server). A thumbnail for
the feed is made from the same pixels.

These functions touch neither storage nor the database: the caller saves
what they return (``monitor.feed.services.post_create``).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image, ImageCms, ImageOps

logger = logging.getLogger(__name__)

# Pillow's format names. The JPEG opener also reads MPO, the multi-picture
# JPEG many phone cameras write.
OPENED_FORMATS = ("JPEG", "PNG", "WEBP")
STORED_FORMAT = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
PHOTO_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 88, "optimize": True},
    "PNG": {"compress_level": 6},
    "WEBP": {"quality": 85},
}
THUMBNAIL_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 80, "optimize": True},
    "WEBP": {"quality": 80},
}

NOT_AN_IMAGE = "The file is not an image we can read: post a JPEG, PNG or WebP photo."
DAMAGED_IMAGE = "The file is not an image we can read: it is damaged or incomplete."

SRGB = ImageCms.createProfile("sRGB")


class PhotoRejected(ValueError):
    """The upload is not a photo we store; ``message`` tells the uploader why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PhotoLimits:
    max_bytes: int  # larger uploads are refused
    max_pixels: int  # images with more pixels are refused before they are decoded
    max_side: int  # the stored photo is shrunk to this many pixels on its long side
    thumbnail_side: int  # and its thumbnail to this many

    @classmethod
    def from_settings(cls) -> PhotoLimits:
        return cls(
            max_bytes=settings.MAX_PHOTO_BYTES,
            max_pixels=settings.MAX_PHOTO_PIXELS,
            max_side=settings.MAX_PHOTO_SIDE,
            thumbnail_side=settings.THUMBNAIL_SIDE,
        )


@dataclass(frozen=True)
class EncodedImage:
    content: bytes
    format: str  # "JPEG", "PNG" or "WEBP"
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def size(self) -> int:
        """Bytes to store."""
        return len(self.content)

    def filename(self, stem: str) -> str:
        return f"{stem}.{self.extension}"

    def as_file(self) -> ContentFile[bytes]:
        return ContentFile(self.content)


@dataclass(frozen=True)
class ProcessedPhoto:
    photo: EncodedImage
    thumbnail: EncodedImage


def process_photo(upload: IO[bytes], limits: PhotoLimits) -> ProcessedPhoto:
    """Check an upload and re-encode it as a photo and its thumbnail.

    Raises ``PhotoRejected`` (with a message for the uploader) for anything
    but a readable JPEG, PNG or WebP image within ``limits``. The photo keeps
    its format (PNG and WebP keep transparency), except that a PNG whose
    lossless encoding would be larger than ``limits.max_bytes`` is stored as
    WebP. The thumbnail is JPEG, or WebP if the image has transparency.
    """
    check_size(upload, limits.max_bytes)
    image, source_format = decode(upload, limits.max_pixels)
    image = shrink(image, limits.max_side)
    photo = encode(image, STORED_FORMAT[source_format], PHOTO_OPTIONS)
    if photo.format == "PNG" and photo.size > limits.max_bytes:
        photo = encode(image, "WEBP", PHOTO_OPTIONS)
    thumbnail_format = "WEBP" if image.mode == "RGBA" else "JPEG"
    thumbnail = encode(shrink(image, limits.thumbnail_side), thumbnail_format, THUMBNAIL_OPTIONS)
    return ProcessedPhoto(photo=photo, thumbnail=thumbnail)


def check_size(upload: IO[bytes], max_bytes: int) -> None:
    upload.seek(0, io.SEEK_END)
    size = upload.tell()
    upload.seek(0)
    if size > max_bytes:
        raise PhotoRejected(f"The photo is larger than {describe_bytes(max_bytes)}.")
    if size == 0:
        raise PhotoRejected("The file is empty: choose a photo to post.")


def describe_bytes(count: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def decode(upload: IO[bytes], max_pixels: int) -> tuple[Image.Image, str]:
    """The upload's pixels, upright, in sRGB as RGB or RGBA, with no metadata;
    and the format Pillow found. Only the header is read before the pixel
    count is checked."""
    upload.seek(0)
    try:
        opened = Image.open(upload, formats=OPENED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard (far above ours unless the setting is raised
        # past it); the file names more pixels than either allows.
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or max_pixels)
        raise PhotoRejected(too_many_pixels(min(max_pixels, pillow_limit))) from None
    except Exception as exc:  # whatever a parser raises, the file is not an image we read
        logger.info("refused an upload Pillow could not identify: %s", exc)
        raise PhotoRejected(NOT_AN_IMAGE) from None
    with opened:
        source_format = opened.format or ""
        width, height = opened.size
        if source_format not in STORED_FORMAT:
            raise PhotoRejected(NOT_AN_IMAGE)
        if width * height > max_pixels:
            raise PhotoRejected(too_many_pixels(max_pixels, width, height))
        try:
            opened.load()  # the first frame of an animated or multi-picture file
        except Exception as exc:  # truncated or corrupt data fails in many ways
            logger.info("refused a %s upload that failed to decode: %s", source_format, exc)
            raise PhotoRejected(DAMAGED_IMAGE) from None
        turn_upright(opened)
        return to_srgb(opened), source_format


def turn_upright(image: Image.Image) -> None:
    """Apply the EXIF orientation to the pixels, in place. Unreadable EXIF
    leaves the image as it is: the pixels are fine, only a tag is broken."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # EXIF parsing fails in many ways
        logger.info("ignored EXIF orientation that could not be read: %s", exc)


def too_many_pixels(max_pixels: int, width: int = 0, height: int = 0) -> str:
    megapixels = f"{max_pixels / 1_000_000:,.3f}".rstrip("0").rstrip(".")
    limit = f"{megapixels} megapixels"
    if width and height:
        return f"The photo has too many pixels ({width} × {height}); the limit is {limit}."
    return f"The photo has too many pixels; the limit is {limit}."


def to_srgb(image: Image.Image) -> Image.Image:
    """A new RGB image (RGBA if the original has transparency) in sRGB, with
    an empty ``info`` so that no metadata can be written out with it."""
    mode = "RGBA" if image.has_transparency_data else "RGB"
    if image.mode.startswith("I"):  # 16-bit greyscale: scale down rather than clip
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    # CMYK and greyscale go to the colour transform as they are (their
    # profiles describe them); everything else becomes RGB(A) first.
    if not (image.mode == "CMYK" or (image.mode == "L" and mode == "RGB")):
        image = image.convert(mode)
    profile = image.info.get("icc_profile")
    if profile:
        image = apply_profile(image, profile, mode)
    converted = image.convert(mode)
    converted.info = {}
    return converted


def apply_profile(image: Image.Image, profile: bytes, mode: str) -> Image.Image:
    """The image converted from its embedded ICC profile to sRGB; unchanged
    if the profile is already sRGB, or unusable (then it is taken as sRGB)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if "sRGB" in ImageCms.getProfileDescription(source):
            return image
        converted = ImageCms.profileToProfile(image, source, SRGB, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.info("ignored an ICC profile that could not be applied: %s", exc)
        return image
    return converted or image


def shrink(image: Image.Image, side: int) -> Image.Image:
    """The image scaled down to at most ``side`` pixels on its long side."""
    width, height = image.size
    if max(width, height) <= side:
        return image
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def encode(image: Image.Image, format: str, options: dict[str, dict[str, Any]]) -> EncodedImage:
    """The image encoded afresh; only the pixels go in, never ``image.info``."""
    image.info = {}
    buffer = io.BytesIO()
    image.save(buffer, format, **options[format])
    return EncodedImage(buffer.getvalue(), format, image.width, image.height)


def process_upload(upload: IO[bytes]) -> ProcessedPhoto:
    """``process_photo`` with the limits in settings."""
    return process_photo(upload, PhotoLimits.from_settings())
