"""What an uploaded item image really is, read from its bytes.

Uploaded images are served from crowdlab's own origin, so their type must never
come from the client: a client-declared ``image/png`` or a ``.png`` name on an
HTML or SVG file would make the browser run its script in a user's session.
Pillow reads the file's header and names the format; only four raster formats
are accepted, and the type, the stored extension and the served
``Content-Type`` all come from that.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import IO

from PIL import Image, UnidentifiedImageError


@dataclass(frozen=True)
class ImageType:
    format: str  # Pillow's name: PNG, JPEG, GIF, WEBP
    content_type: str
    extension: str
    label: str  # for people: PNG, JPEG, GIF, WebP


# SVG is not a raster image (Pillow cannot open it) and can carry script.
ALLOWED_IMAGE_TYPES: dict[str, ImageType] = {
    "PNG": ImageType("PNG", "image/png", ".png", "PNG"),
    "JPEG": ImageType("JPEG", "image/jpeg", ".jpg", "JPEG"),
    "GIF": ImageType("GIF", "image/gif", ".gif", "GIF"),
    "WEBP": ImageType("WEBP", "image/webp", ".webp", "WebP"),
}
ALLOWED_IMAGE_LABELS = ", ".join(kind.label for kind in ALLOWED_IMAGE_TYPES.values())
_ALLOWED_OR = "PNG, JPEG, GIF or WebP"


class ImageRejected(ValueError):
    """The file is not one of the accepted raster images; the message says what it
    is, as the end of a sentence ("the uploaded file <message>")."""


def image_type_of(stream: IO[bytes], *, verify: bool = True) -> ImageType:
    """The verified type of the image in ``stream`` (rewound afterwards).

    ``verify`` also runs Pillow's integrity check over the file (uploads);
    serving reads only the header, which is what decides the type.
    Raises ``ImageRejected`` for anything that is not PNG, JPEG, GIF or WebP.
    """
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            # A huge image is refused below (DecompressionBombError), not warned about.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the four formats' parsers run: nothing else of Pillow's
            # (EPS, PSD, ...) ever parses an upload.
            with Image.open(stream, formats=list(ALLOWED_IMAGE_TYPES)) as image:
                found = image.format or ""
                if verify:
                    image.verify()
    except Image.DecompressionBombError:
        raise ImageRejected("has too many pixels to be shown to annotators") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        # Pillow raises several types for bytes it cannot make sense of.
        raise ImageRejected(
            f"is not a {_ALLOWED_OR} image (its bytes were checked, not its name or declared type)"
        ) from None
    finally:
        stream.seek(0)
    kind = ALLOWED_IMAGE_TYPES.get(found)
    if kind is None:
        raise ImageRejected(f"is a {found} image")
    return kind
