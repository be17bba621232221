"""Photo uploads: what is refused, and what is stored (monitor/feed/images.py,
PostForm, post_create), through the real view and at the unit level."""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import ExifTags, Image, ImageCms

from monitor.events.schema import parse_event
from monitor.feed import images, services
from monitor.feed.images import PhotoLimits, PhotoRejected, process_photo
from monitor.feed.services import post_create
from monitor.models import OutboxEvent, Post
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.django_db

NOT_READABLE = "not an image we can read"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LIMITS = PhotoLimits(
    max_bytes=10 * 1024 * 1024, max_pixels=40_000_000, max_side=4096, thumbnail_side=640
)


def media_files() -> set[Path]:
    return {path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """The signature and IHDR of a 1-bit greyscale PNG."""
    return PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))


def blank_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG, built row by row: many pixels in few bytes (20,000 x
    20,000 is under 50 KB), and never held in memory as pixels."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter type 0, then the packed bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return png_header(width, height) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def image_bytes(image: Image.Image, format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def noise(size: tuple[int, int]) -> Image.Image:
    """Colour noise: compresses badly, so files are big for their pixels."""
    return Image.merge("RGB", [Image.effect_noise(size, 80) for _ in range(3)])


def halves(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new(mode, size, "blue")
    image.paste("red", (0, 0, size[0] // 2, size[1]))
    return image


def gps_jpeg() -> bytes:
    """A JPEG carrying what a phone camera writes: GPS position, camera, XMP,
    an ICC profile and a comment."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Examplephone"
    exif[ExifTags.Base.Model] = "X 12"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (59.0, 19.0, 46.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (18.0, 4.0, 7.0)
    gps[ExifTags.GPS.GPSProcessingMethod] = b"ASCII\0\0\0GPS"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><secret>home address</secret></x:xmpmeta>'
    return image_bytes(
        Image.new("RGB", (120, 90), "teal"),
        "JPEG",
        exif=exif,
        icc_profile=srgb,
        xmp=xmp,
        comment=b"taken at home",
    )


def rotated_jpeg() -> bytes:
    """80 x 60 as stored, with EXIF orientation 6: shown turned a quarter clockwise."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return image_bytes(halves((80, 60)), "JPEG", exif=exif, quality=95)


def translucent_png() -> bytes:
    image = Image.new("RGBA", (50, 40), (0, 0, 0, 0))  # transparent
    image.paste((255, 0, 0, 128), (0, 0, 25, 40))  # half-transparent red on the left
    return image_bytes(image, "PNG")


def linear_rgb_profile() -> bytes:
    """A minimal ICC v2 profile: sRGB's primaries with linear (gamma 1) curves,
    so a mid grey of 128 is about 188 once converted to sRGB."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    name = b"Linear RGB\0"
    description = b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(8 + 3 + 67)
    linear = b"curv" + bytes(4) + struct.pack(">I", 0)
    tags = [
        (b"desc", description),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", linear),
        (b"gTRC", linear),
        (b"bTRC", linear),
    ]
    start = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", start + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + xyz(0.9642, 1.0, 0.8249)[8:]
        + bytes(48)
    )
    return header + table + body


def metadata_of(content: bytes) -> dict[str, Any]:
    """What a stored file says besides its pixels."""
    with Image.open(io.BytesIO(content)) as image:
        return {
            "exif": dict(image.getexif()),
            "info": {
                key: value
                for key, value in image.info.items()
                if key not in {"dpi", "jfif", "jfif_version", "jfif_unit", "jfif_density"}
            },
        }


@pytest.fixture
def logged_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def post_upload(
    client: Client,
    name: str,
    content: bytes,
    *,
    json: bool = False,
    content_type: str = "image/jpeg",
) -> Any:
    """Post a photo the way a browser would, with ``name`` sent exactly as given
    (the test client's own encoding would drop any directories from it)."""
    boundary = "upload-boundary-7d1f"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="caption"\r\n\r\n'
            "Test\r\n"
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="photo"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Accept": "application/json"} if json else {}
    return client.post(
        reverse("post_new"),
        body,
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=headers,
    )


def truncated_jpeg() -> bytes:
    whole = image_bytes(noise((320, 240)), "JPEG")
    return whole[: len(whole) // 2]


# Contents are made when a test runs (a 20,000 x 20,000 PNG takes a moment).
REFUSALS = [
    pytest.param("notes.jpg", lambda: b"just some text\n" * 20, NOT_READABLE, {}, id="text"),
    pytest.param(
        "page.png",
        lambda: png_header(16, 16) + b"<html><script>alert(1)</script></html>",
        NOT_READABLE,
        {},
        id="png-header-then-html",
    ),
    pytest.param(
        "bomb.png",
        lambda: blank_png(20_000, 20_000),
        "too many pixels; the limit is 40 megapixels",
        {},
        id="decompression-bomb",
    ),
    pytest.param(
        "bomb.png",
        lambda: blank_png(20_000, 20_000),
        "too many pixels; the limit is 178.957 megapixels",
        {"MAX_PHOTO_PIXELS": 10**12},
        id="decompression-bomb-only-pillow-guards",
    ),
    pytest.param(
        "wide.png",
        lambda: blank_png(8000, 6000),  # 48 megapixels: below Pillow's guard, above ours
        "too many pixels (8000 × 6000); the limit is 40 megapixels",
        {},
        id="over-the-pixel-limit",
    ),
    pytest.param(
        "small.jpg",
        lambda: jpeg_bytes(size=(64, 48)),
        "too many pixels (64 × 48); the limit is 0.001 megapixels",
        {"MAX_PHOTO_PIXELS": 1000},
        id="over-a-configured-pixel-limit",
    ),
    pytest.param(
        "big.jpg",
        lambda: image_bytes(noise((400, 300)), "JPEG"),
        "The photo is larger than 10 KB.",
        {"MAX_PHOTO_BYTES": 10 * 1024},
        id="over-the-byte-limit",
    ),
    pytest.param(
        "anim.gif", lambda: image_bytes(halves((40, 30)), "GIF"), NOT_READABLE, {}, id="gif"
    ),
    pytest.param(
        "pic.bmp", lambda: image_bytes(halves((40, 30)), "BMP"), NOT_READABLE, {}, id="bmp"
    ),
    pytest.param("cut.jpg", truncated_jpeg, NOT_READABLE, {}, id="truncated-jpeg"),
    pytest.param("empty.jpg", lambda: b"", "The file is empty", {}, id="empty-file"),
]


@pytest.mark.parametrize("as_json", [False, True], ids=["html", "json"])
@pytest.mark.parametrize(("name", "make", "message", "overrides"), REFUSALS)
def test_it_refuses_the_upload_and_leaves_nothing_behind(
    logged_in: Client,
    settings: Any,
    name: str,
    make: Callable[[], bytes],
    message: str,
    overrides: dict[str, int],
    as_json: bool,
) -> None:
    for key, value in overrides.items():
        setattr(settings, key, value)
    files_before = media_files()

    response = post_upload(logged_in, name, make(), json=as_json)

    assert response.status_code == 400
    if as_json:
        errors = response.json()["errors"]
        assert list(errors) == ["photo"]
        assert message in errors["photo"][0]["message"], errors
    else:
        assert message.encode() in response.content
        assert b'name="photo"' in response.content  # the form again, to try another
    assert Post.objects.count() == 0
    assert OutboxEvent.objects.count() == 0
    assert media_files() == files_before


def stored_post() -> tuple[Post, bytes, bytes]:
    post = Post.objects.get()
    return post, Path(post.photo.path).read_bytes(), Path(post.thumbnail.path).read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../../evil.jpg", id="path-like"),
        pytest.param("../../etc/passwd.jpg", id="path-to-passwd"),
        pytest.param("..\\..\\evil.jpg", id="windows-path"),
        pytest.param("/etc/passwd.jpg", id="absolute-path"),
        pytest.param("&#46;&#46;/evil.jpg", id="html-entities"),
        pytest.param("evil.jpg%00.html", id="encoded-nul"),
        pytest.param("x.html", id="html-name"),
    ],
)
def test_it_stores_under_a_random_name_whatever_the_upload_is_called(
    logged_in: Client, name: str
) -> None:
    response = post_upload(logged_in, name, jpeg_bytes(), content_type="text/html")

    assert response.status_code == 302
    post = Post.objects.get()
    assert re.fullmatch(r"photos/[0-9a-f]{32}\.jpg", post.photo.name)
    assert re.fullmatch(r"thumbnails/[0-9a-f]{32}\.jpg", post.thumbnail.name)
    media = Path(settings.MEDIA_ROOT).resolve()
    assert Path(post.photo.path).resolve().parent == media / "photos"
    assert Path(post.thumbnail.path).resolve().parent == media / "thumbnails"
    assert not [path for path in media_files() if "evil" in path.name or "passwd" in path.name]


def test_it_names_the_file_by_what_it_decodes_as(logged_in: Client) -> None:
    png = image_bytes(halves((40, 30)), "PNG")

    response = post_upload(logged_in, "holiday.jpg", png, content_type="image/jpeg")

    assert response.status_code == 302
    post, photo, _ = stored_post()
    assert post.photo.name.endswith(".png")
    assert Image.open(io.BytesIO(photo)).format == "PNG"


def test_it_stores_a_gps_tagged_jpeg_without_any_metadata(logged_in: Client) -> None:
    original = gps_jpeg()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert b"GPS" in original and b"home" in original

    response = post_upload(logged_in, "IMG_0001.jpg", original)

    assert response.status_code == 302
    _, photo, thumbnail = stored_post()
    for stored in (photo, thumbnail):
        assert metadata_of(stored) == {"exif": {}, "info": {}}
        for leak in (b"Exif", b"GPS", b"Examplephone", b"home", b"xmpmeta", b"ICC_PROFILE"):
            assert leak not in stored


def test_it_turns_the_photo_by_its_exif_orientation(logged_in: Client) -> None:
    response = post_upload(logged_in, "sideways.jpg", rotated_jpeg())

    assert response.status_code == 302
    _, photo, thumbnail = stored_post()
    for stored in (photo, thumbnail):
        image = Image.open(io.BytesIO(stored))
        assert image.size == (60, 80)
        assert not image.getexif()  # no orientation left to apply twice
        red, blue = image.getpixel((30, 10)), image.getpixel((30, 70))
        assert red[0] > 200 and red[2] < 60, red  # the left half is now on top
        assert blue[2] > 200 and blue[0] < 60, blue


def test_it_keeps_a_png_with_transparency(logged_in: Client) -> None:
    response = post_upload(logged_in, "logo.png", translucent_png(), content_type="image/png")

    assert response.status_code == 302
    post, photo, thumbnail = stored_post()
    assert post.photo.name.endswith(".png")
    image = Image.open(io.BytesIO(photo))
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (50, 40))
    assert image.getpixel((10, 10)) == (255, 0, 0, 128)
    assert image.getpixel((40, 10))[3] == 0
    assert post.thumbnail.name.endswith(".webp")
    small = Image.open(io.BytesIO(thumbnail))
    assert (small.format, small.mode) == ("WEBP", "RGBA")
    assert small.getpixel((40, 10))[3] == 0


def test_it_makes_a_small_thumbnail_and_names_it_in_the_event(logged_in: Client, user: Any) -> None:
    response = post_upload(logged_in, "wide.jpg", image_bytes(noise((1600, 1200)), "JPEG"))

    assert response.status_code == 302
    post, photo, thumbnail = stored_post()
    assert Image.open(io.BytesIO(photo)).size == (1600, 1200)
    assert Image.open(io.BytesIO(thumbnail)).size == (640, 480)
    assert len(thumbnail) < len(photo) / 3
    event = parse_event(bytes(OutboxEvent.objects.get().payload))
    assert event["data"]["thumbnail_url"] == post.thumbnail.url
    assert event["data"]["photo_url"] == post.photo.url
    assert event["data"]["post_id"] == post.pk


def test_it_shrinks_a_photo_over_the_side_limit(logged_in: Client, settings: Any) -> None:
    settings.MAX_PHOTO_SIDE = 500
    settings.THUMBNAIL_SIDE = 100

    response = post_upload(logged_in, "pano.jpg", jpeg_bytes(size=(2000, 400)))

    assert response.status_code == 302
    _, photo, thumbnail = stored_post()
    assert Image.open(io.BytesIO(photo)).size == (500, 100)
    assert Image.open(io.BytesIO(thumbnail)).size == (100, 20)


def test_it_stores_a_png_with_html_appended_as_the_image_alone(logged_in: Client) -> None:
    polyglot = image_bytes(halves((40, 30)), "PNG") + b"<html><script>alert(1)</script>"

    response = post_upload(logged_in, "polyglot.png", polyglot, content_type="image/png")

    assert response.status_code == 302
    _, photo, thumbnail = stored_post()
    assert b"<script" not in photo and b"<script" not in thumbnail


def test_it_removes_both_files_when_the_transaction_fails(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_emit(**kwargs: Any) -> None:
        raise RuntimeError("the outbox is broken")

    monkeypatch.setattr(services, "emit_event", broken_emit)
    files_before = media_files()

    with pytest.raises(RuntimeError):
        post_create(author=user, photo=SimpleUploadedFile("a.jpg", jpeg_bytes()), caption="x")

    assert media_files() == files_before
    assert Post.objects.count() == 0


def test_post_create_checks_an_upload_itself(user: Any) -> None:
    files_before = media_files()

    with pytest.raises(PhotoRejected):
        post_create(author=user, photo=SimpleUploadedFile("a.jpg", b"<html>"), caption="x")

    assert media_files() == files_before
    assert Post.objects.count() == OutboxEvent.objects.count() == 0


def test_post_create_stores_a_raw_upload_re_encoded(user: Any) -> None:
    post = post_create(
        author=user, photo=SimpleUploadedFile("../../a.jpg", gps_jpeg()), caption="x"
    )

    stored = Path(post.photo.path).read_bytes()
    assert metadata_of(stored)["exif"] == {}
    assert b"GPS" not in stored
    assert post.thumbnail.name.startswith("thumbnails/")


# --- monitor.feed.images on its own ------------------------------------------------


def process(content: bytes, limits: PhotoLimits = LIMITS) -> images.ProcessedPhoto:
    return process_photo(io.BytesIO(content), limits)


def decoded(encoded: images.EncodedImage) -> Image.Image:
    image = Image.open(io.BytesIO(encoded.content))
    assert (image.format, image.size) == (encoded.format, (encoded.width, encoded.height))
    return image


def test_a_webp_stays_webp() -> None:
    result = process(image_bytes(halves((40, 30)), "WEBP", quality=90))

    assert (result.photo.format, result.photo.extension) == ("WEBP", "webp")
    assert decoded(result.photo).size == (40, 30)
    assert result.thumbnail.format == "JPEG"


def test_a_multi_picture_jpeg_is_stored_as_jpeg() -> None:
    mpo = image_bytes(
        halves((40, 30)), "MPO", save_all=True, append_images=[Image.new("RGB", (40, 30))]
    )
    assert Image.open(io.BytesIO(mpo)).format == "MPO"

    result = process(mpo)

    assert result.photo.format == "JPEG"
    assert decoded(result.photo).getpixel((5, 5))[0] > 200  # the first picture


def test_a_cmyk_jpeg_becomes_rgb() -> None:
    result = process(image_bytes(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"))

    image = decoded(result.photo)
    assert image.mode == "RGB"
    red = image.getpixel((5, 5))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red


def test_16_bit_greyscale_keeps_its_brightness() -> None:
    grey = Image.new("I;16", (40, 30), 32768)  # half of 65535

    image = decoded(process(image_bytes(grey, "PNG")).photo)

    assert 120 <= image.convert("L").getpixel((5, 5)) <= 135


def test_a_palette_png_with_a_transparent_colour_keeps_it() -> None:
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.paste(0, (0, 0, 20, 30))

    image = decoded(process(image_bytes(palette, "PNG", transparency=0)).photo)

    assert image.mode == "RGBA"
    assert image.getpixel((5, 5))[3] == 0
    assert image.getpixel((30, 5)) == (255, 0, 0, 255)


def test_colours_are_converted_to_srgb() -> None:
    grey = Image.new("RGB", (40, 30), (128, 128, 128))
    content = image_bytes(grey, "JPEG", icc_profile=linear_rgb_profile(), quality=95)

    image = decoded(process(content).photo)

    assert "icc_profile" not in image.info
    assert all(184 <= channel <= 192 for channel in image.getpixel((5, 5))), image.getpixel((5, 5))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_broken_exif_block_does_not_refuse_the_photo() -> None:
    broken = b"Exif\0\0MM\0\x2a\0\0\0\x08\xff\xff" + b"\x01" * 40

    result = process(image_bytes(halves((40, 30)), "JPEG", exif=broken))

    assert decoded(result.photo).size == (40, 30)


def test_an_orientation_that_cannot_be_read_leaves_the_photo_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreadable(image: Image.Image, **kwargs: Any) -> None:
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(images.ImageOps, "exif_transpose", unreadable)

    result = process(rotated_jpeg())

    assert decoded(result.photo).size == (80, 60)


def test_an_unusable_icc_profile_is_ignored() -> None:
    content = image_bytes(halves((40, 30)), "JPEG", icc_profile=b"not a profile" * 10)

    result = process(content)

    assert "icc_profile" not in decoded(result.photo).info


def test_a_png_too_big_to_keep_lossless_is_stored_as_webp() -> None:
    # Palette noise: one byte a pixel uploaded, three once it is RGB.
    palette = Image.effect_noise((400, 400), 100).convert("P", palette=Image.Palette.ADAPTIVE)
    content = image_bytes(palette, "PNG")
    limits = PhotoLimits(
        max_bytes=len(content) + 1000, max_pixels=10**6, max_side=1000, thumbnail_side=100
    )

    result = process(content, limits)

    assert result.photo.format == "WEBP"
    assert result.photo.size <= limits.max_bytes


def test_the_sizes_are_reported() -> None:
    result = process(jpeg_bytes(size=(1280, 960)))

    assert (result.photo.width, result.photo.height) == (1280, 960)
    assert (result.thumbnail.width, result.thumbnail.height) == (640, 480)
    assert result.photo.size == len(result.photo.content)
    assert result.thumbnail.filename("thumbnail") == "thumbnail.jpg"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (10 * 1024 * 1024, "10 MB"),
        (1536 * 1024, "1.5 MB"),
        (10 * 1024, "10 KB"),
        (500, "500 bytes"),
    ],
)
def test_limits_are_described_in_plain_units(count: int, text: str) -> None:
    assert images.describe_bytes(count) == text
