"""Why an image is refused: shared by every reader, importable without numpy (the command line checks its
options before loading anything heavy)."""
from __future__ import annotations


class ImageError(ValueError):
    """The bytes are not an image this product can use. `code` is a stable machine-readable reason."""

    status = 400

    def __init__(self, message: str, code: str = "invalid_image"):
        super().__init__(message)
        self.code = code
        self.message = message


class ImageTooLarge(ImageError):
    status = 413

    def __init__(self, message: str):
        super().__init__(message, code="image_too_large")
