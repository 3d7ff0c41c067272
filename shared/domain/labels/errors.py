"""Errors of a label upload: ImageError (400 by default) with a stable code, and 413 for what is too large."""
from __future__ import annotations

from shared.domain.imaging.errors import ImageError


class LabelsTooLarge(ImageError):
    status = 413

    def __init__(self, message: str, code: str = "labels_too_large"):
        super().__init__(message, code=code)


def bad_labels(message: str, code: str = "bad_labels") -> ImageError:
    return ImageError(message, code=code)


def within(exc: ImageError, where: str) -> ImageError:
    """The same error (status, code) with the part of the upload it concerns in front of its message."""
    error = ImageError(f"{where}: {exc.message}", code=exc.code)
    error.status = exc.status
    return error
