"""Aspect-ratio bins of the PixArt checkpoints and the resize-and-center-crop back to the requested size.

Each checkpoint generates at one of a fixed set of (height, width) pairs near its native pixel count; the
request is mapped to the bin whose aspect ratio (h / w) is closest, generated there, then resized to cover
the requested size and center-cropped, as the reference pipeline does. The bin tables are the published ones.
"""

import functools

import numpy as np

from studio.errors import ConfigError


def _table(*rows):
    """(ratio, height, width) rows -> {ratio: (height, width)}."""
    return {ratio: (h, w) for ratio, h, w in rows}


BIN_2048 = _table(
    (0.25, 1024, 4096), (0.26, 1024, 3968), (0.27, 1024, 3840), (0.28, 1024, 3712), (0.32, 1152, 3584),
    (0.33, 1152, 3456), (0.35, 1152, 3328), (0.4, 1280, 3200), (0.42, 1280, 3072), (0.48, 1408, 2944),
    (0.5, 1408, 2816), (0.52, 1408, 2688), (0.57, 1536, 2688), (0.6, 1536, 2560), (0.68, 1664, 2432),
    (0.72, 1664, 2304), (0.78, 1792, 2304), (0.82, 1792, 2176), (0.88, 1920, 2176), (0.94, 1920, 2048),
    (1.0, 2048, 2048), (1.07, 2048, 1920), (1.13, 2176, 1920), (1.21, 2176, 1792), (1.29, 2304, 1792),
    (1.38, 2304, 1664), (1.46, 2432, 1664), (1.67, 2560, 1536), (1.75, 2688, 1536), (2.0, 2816, 1408),
    (2.09, 2944, 1408), (2.4, 3072, 1280), (2.5, 3200, 1280), (2.89, 3328, 1152), (3.0, 3456, 1152),
    (3.11, 3584, 1152), (3.62, 3712, 1024), (3.75, 3840, 1024), (3.88, 3968, 1024), (4.0, 4096, 1024),
)

BIN_1024 = _table(
    (0.25, 512, 2048), (0.28, 512, 1856), (0.32, 576, 1792), (0.33, 576, 1728), (0.35, 576, 1664),
    (0.4, 640, 1600), (0.42, 640, 1536), (0.48, 704, 1472), (0.5, 704, 1408), (0.52, 704, 1344),
    (0.57, 768, 1344), (0.6, 768, 1280), (0.68, 832, 1216), (0.72, 832, 1152), (0.78, 896, 1152),
    (0.82, 896, 1088), (0.88, 960, 1088), (0.94, 960, 1024), (1.0, 1024, 1024), (1.07, 1024, 960),
    (1.13, 1088, 960), (1.21, 1088, 896), (1.29, 1152, 896), (1.38, 1152, 832), (1.46, 1216, 832),
    (1.67, 1280, 768), (1.75, 1344, 768), (2.0, 1408, 704), (2.09, 1472, 704), (2.4, 1536, 640),
    (2.5, 1600, 640), (3.0, 1728, 576), (4.0, 2048, 512),
)

BIN_512 = _table(
    (0.25, 256, 1024), (0.28, 256, 928), (0.32, 288, 896), (0.33, 288, 864), (0.35, 288, 832),
    (0.4, 320, 800), (0.42, 320, 768), (0.48, 352, 736), (0.5, 352, 704), (0.52, 352, 672), (0.57, 384, 672),
    (0.6, 384, 640), (0.68, 416, 608), (0.72, 416, 576), (0.78, 448, 576), (0.82, 448, 544),
    (0.88, 480, 544), (0.94, 480, 512), (1.0, 512, 512), (1.07, 512, 480), (1.13, 544, 480),
    (1.21, 544, 448), (1.29, 576, 448), (1.38, 576, 416), (1.46, 608, 416), (1.67, 640, 384),
    (1.75, 672, 384), (2.0, 704, 352), (2.09, 736, 352), (2.4, 768, 320), (2.5, 800, 320), (3.0, 864, 288),
    (4.0, 1024, 256),
)

BIN_256 = _table(
    (0.25, 128, 512), (0.28, 128, 464), (0.32, 144, 448), (0.33, 144, 432), (0.35, 144, 416),
    (0.4, 160, 400), (0.42, 160, 384), (0.48, 176, 368), (0.5, 176, 352), (0.52, 176, 336), (0.57, 192, 336),
    (0.6, 192, 320), (0.68, 208, 304), (0.72, 208, 288), (0.78, 224, 288), (0.82, 224, 272),
    (0.88, 240, 272), (0.94, 240, 256), (1.0, 256, 256), (1.07, 256, 240), (1.13, 272, 240),
    (1.21, 272, 224), (1.29, 288, 224), (1.38, 288, 208), (1.46, 304, 208), (1.67, 320, 192),
    (1.75, 336, 192), (2.0, 352, 176), (2.09, 368, 176), (2.4, 384, 160), (2.5, 400, 160), (3.0, 432, 144),
    (4.0, 512, 128),
)

BINS_BY_SAMPLE_SIZE = {256: BIN_2048, 128: BIN_1024, 64: BIN_512, 32: BIN_256}


def bins_for(sample_size: int) -> dict:
    """The bin table of a transformer with this latent `sample_size` (256 -> the 2048 px bins, ...)."""
    if sample_size not in BINS_BY_SAMPLE_SIZE:
        raise ConfigError(f"no aspect-ratio bins for a transformer of sample_size {sample_size} (there are bins "
                          f"for {', '.join(map(str, sorted(BINS_BY_SAMPLE_SIZE)))}); generate at the exact size "
                          f"instead: use_resolution_binning=False, or --no-binning on the command line")
    return BINS_BY_SAMPLE_SIZE[sample_size]


def closest_bin(height: int, width: int, table: dict) -> tuple[int, int]:
    """The (height, width) of the bin whose ratio is nearest h / w; ties go to the earlier (smaller) ratio."""
    aspect = height / width
    ratio = min(table, key=lambda r: abs(r - aspect))
    return table[ratio]


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1D linear resampling with half-pixel centres, no antialiasing
    (the sampling rule of torch's interpolate(mode='bilinear', align_corners=False))."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m


def _weights(in_h: int, in_w: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The resize's float32 (height, in_h) and (width, in_w) matrices: scale to cover height x width, keep
    the centre. The scaled size is the reference's int(size * ratio) in floating point, except where that
    falls short of the request: 304 * (231 / 304) = 230.99999 gives 230 < 231, and the reference's crop then
    keeps a single column (height 151, width 231 gave 151 x 1 px; 1-2% of requested sizes do so); studio
    takes the requested size there, which is the exact product."""
    ratio = max(height / in_h, width / in_w)
    out_h, out_w = max(height, int(in_h * ratio)), max(width, int(in_w * ratio))
    top, left = (out_h - height) // 2, (out_w - width) // 2
    rows = _bilinear_matrix(in_h, out_h)[top:top + height].astype(np.float32)  # (height, in_h)
    cols = _bilinear_matrix(in_w, out_w)[left:left + width].astype(np.float32)  # (width, in_w)
    return rows, cols


@functools.lru_cache(maxsize=64)
def _rows_first(channels: int, in_h: int, in_w: int, height: int, width: int) -> bool:
    """Whether one image's resize contracts the rows (height) before the columns: the order numpy's greedy
    einsum path takes for "yh,nchw,xw->ncyx" with n = 1, which the resize keeps so that its values stay the
    einsum's. (Landscape upscales go columns first.)"""
    shapes = (height, in_h), (1, channels, in_h, in_w), (width, in_w)
    path = np.einsum_path("yh,nchw,xw->ncyx", *(np.broadcast_to(np.float32(0), s) for s in shapes),
                          optimize=True)[0]
    return path[1] == (0, 1)


def _resize_one(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, rows_first: bool,
                out: np.ndarray) -> None:
    """out (C, height, width) = image (C, H, W) resized: the two matrix products np.einsum("yh,chw,xw->cyx",
    rows, image, cols, optimize=True) makes, each over all channels at once (split per channel, BLAS rounds
    differently), the second written straight into `out` where its layout is the product's."""
    c = image.shape[0]
    if rows_first:
        t = np.tensordot(image, rows, axes=((1,), (1,)))  # (C, W, height)
        a = t.transpose(0, 2, 1).reshape(c * rows.shape[0], -1)  # (C * height, W), a copy
        target, b = out, cols.T  # (C, height, width) = (C * height, W) @ (W, width)
    else:
        t = np.tensordot(cols, image, axes=((1,), (2,)))  # (width, C, H)
        a = t.transpose(1, 0, 2).reshape(c * cols.shape[0], -1)  # (C * width, H), a copy
        target, b = out.transpose(0, 2, 1), rows.T  # (C, width, height) = (C * width, H) @ (H, height)
    del t
    if target.flags.c_contiguous:
        np.dot(a, b, out=target.reshape(a.shape[0], -1))
    else:
        target[...] = np.dot(a, b).reshape(target.shape)


def empty_resized(n: int, channels: int, height: int, width: int, in_h: int, in_w: int) -> np.ndarray:
    """An uninitialised float32 (n, channels, height, width) array laid out as the resize from in_h x in_w
    writes each image (`resized`): (height, width) planes, or (width, height) ones seen transposed."""
    if _rows_first(channels, in_h, in_w, height, width):
        return np.empty((n, channels, height, width), np.float32)
    return np.empty((n, channels, width, height), np.float32).transpose(0, 1, 3, 2)


def resized(images: np.ndarray, height: int, width: int, out: np.ndarray | None = None):
    """Yield each of the float32 images (N, C, H, W) scaled to cover height x width (bilinear) and
    centre-cropped: (C, height, width), one at a time, each as np.einsum computes that image alone (the
    values do not depend on N). Into out[i] when `out` (N, C, height, width) is given, straight into it when
    it comes from `empty_resized`; else into one buffer that every image reuses, so take what you need before
    the next. Images already of that size are yielded as they are (views of `images`), or copied into out."""
    n, c, in_h, in_w = images.shape
    if (in_h, in_w) == (height, width):
        for i in range(n):
            if out is not None and out is not images:
                out[i] = images[i]
            yield images[i] if out is None else out[i]
        return
    rows, cols = _weights(in_h, in_w, height, width)
    rows_first = _rows_first(c, in_h, in_w, height, width)
    buffer = empty_resized(1, c, height, width, in_h, in_w)[0] if out is None else None
    for i in range(n):
        target = buffer if out is None else out[i]
        _resize_one(images[i], rows, cols, rows_first, target)
        yield target


def resize_and_center_crop(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale float32 (N, C, H, W) images to cover height x width (bilinear), then crop the centre: a new
    (N, C, height, width) array, or `images` itself when already that size (`resized`)."""
    if images.shape[2:] == (height, width):
        return images
    out = empty_resized(*images.shape[:2], height, width, *images.shape[2:])
    for _ in resized(images, height, width, out=out):
        pass
    return out


# numpy's BLAS (OpenBLAS) takes a 32 MiB buffer at its first matrix product in the process, the resize's
# (MindSpore's CPU kernels are not BLAS), and keeps it: measured 31 MiB
BLAS_BUFFER = 32 * 2 ** 20


def resize_bytes(images: int, channels: int, in_h: int, in_w: int, height: int, width: int,
                 output_type: str = "pil") -> int:
    """The most the pipeline holds at once to resize `images` decoded images from in_h x in_w px to height x
    width px and convert them to `output_type`, beside the decoded array: BLAS's buffer; while resizing, the
    two weight matrices, one image's first product and its transposed copy (`_resize_one`, which frees the
    first before the second product) and the outputs: for 'np' the (N, C, height, width) float32 array; for
    'pil' one float32 image (`resized`'s buffer) and the uint8 pixels of each; then, the floats gone, the
    pixels turned into PIL images one by one (4 bytes a pixel: PIL keeps RGB as RGBX). 0 when nothing is
    resized (same size, or 'latent'). Measured from 1024^2 to 8192^2: 959 MiB 'np' (this counts 960), 1055
    MiB 'pil' (1056); README, Memory."""
    if (in_h, in_w) == (height, width) or output_type == "latent":
        return 0
    matrices = 4 * (height * in_h + width * in_w)
    first = 4 * channels * (height * in_w if _rows_first(channels, in_h, in_w, height, width) else in_h * width)
    image = 4 * channels * height * width
    if output_type == "np":  # image i's copy beside the i images before it, or its product beside i + 1
        return BLAS_BUFFER + matrices + first + (images - 1) * image + max(first, image)
    pixels, picture = 3 * height * width, 4 * height * width
    # the last image's copy (beside the buffer once an image before it was written), product, conversion
    last = max(2 * first + (image if images > 1 else 0), first + image, image + pixels)
    return BLAS_BUFFER + max(matrices + (images - 1) * pixels + last, pixels + images * picture)
