"""Pixels -> files, written atomically: a temporary file in the target folder, then a rename.

An existing file is never replaced unless the caller passes overwrite=True.
"""

import os
import tempfile
from pathlib import Path

from studio.errors import InputError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


def check_target(path: Path, overwrite: bool) -> Path:
    """Fail early (before any work) if `path` can't be written: unknown format, existing file, no folder."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path}: unknown image format '{path.suffix}' (allowed: {', '.join(sorted(FORMATS))})")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: file exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such folder")
    return path


def save_image(image, path, overwrite: bool = False, metadata: dict[str, str] | None = None,
               dpi: int | None = None, quality: int = 95) -> Path:
    """Write a PIL image atomically; PNG gets `metadata` as text chunks, JPEG `quality`."""
    from PIL import PngImagePlugin

    path = check_target(Path(path), overwrite)
    fmt = FORMATS[path.suffix.lower()]
    options = {}
    if dpi:
        options["dpi"] = (dpi, dpi)
    if fmt == "PNG" and metadata:
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            info.add_text(key, str(value))
        options["pnginfo"] = info
    if fmt == "JPEG":
        options["quality"] = quality
        image = image.convert("RGB")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=fmt, **options)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and path.exists():
            raise InputError(f"{path}: file appeared while writing (not replaced)")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
