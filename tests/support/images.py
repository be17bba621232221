"""Test images: real JPEG bytes, made on demand, for uploads and media."""

from __future__ import annotations

import io

from PIL import Image


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: str = "teal") -> bytes:
    """A valid JPEG of ``size`` pixels, filled with ``color``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()
