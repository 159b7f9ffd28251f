"""Aspect-ratio binning and resize-and-crop against the reference's tables and resampling."""

import numpy as np
import pytest

from studio import binning
from tests.util import rel_l2

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def test_tables_match_reference():
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN)
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    for ours, ref in [(binning.BIN_2048, ASPECT_RATIO_2048_BIN), (binning.BIN_1024, ASPECT_RATIO_1024_BIN),
                      (binning.BIN_512, ASPECT_RATIO_512_BIN), (binning.BIN_256, ASPECT_RATIO_256_BIN)]:
        assert ours == {float(k): (int(v[0]), int(v[1])) for k, v in ref.items()}


@pytest.mark.parametrize("h,w,expected", [
    (1024, 1024, (1024, 1024)), (2160, 3840, (768, 1344)), (1440, 5120, (512, 1856)),
    (2532, 1170, (1472, 704)), (7016, 4961, (1152, 832)), (100, 100000, (512, 2048))])
def test_closest_bin_1024(h, w, expected):
    from diffusers.image_processor import PixArtImageProcessor
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_1024_BIN
    assert binning.closest_bin(h, w, binning.bins_for(128)) == expected
    assert PixArtImageProcessor.classify_height_width_bin(h, w, ASPECT_RATIO_1024_BIN) == expected


@pytest.mark.parametrize("src,dst", [((24, 40), (18, 33)), ((16, 16), (40, 24)), ((20, 12), (20, 13)),
                                     ((7, 9), (7, 9))])
def test_resize_and_center_crop_matches_reference(src, dst):
    from diffusers.image_processor import PixArtImageProcessor
    x = np.random.default_rng(0).random((2, 3, *src), dtype=np.float32)
    expected = PixArtImageProcessor.resize_and_crop_tensor(torch.from_numpy(x), dst[1], dst[0]).numpy()
    actual = binning.resize_and_center_crop(x, *dst)
    assert actual.shape == expected.shape == (2, 3, *dst)
    assert rel_l2(actual, expected) <= 1e-6


def test_no_bins_for_an_unknown_sample_size_is_a_one_line_error():
    from studio.errors import ConfigError
    with pytest.raises(ConfigError, match=r"sample_size 96 \(there are bins for 32, 64, 128, 256\).*--no-binning"):
        binning.bins_for(96)


def einsum_resize(images, height, width):
    """The resize as studio computed it before it went one image at a time: one einsum over the batch."""
    in_h, in_w = images.shape[2:]
    ratio = max(height / in_h, width / in_w)
    out_h, out_w = max(height, int(in_h * ratio)), max(width, int(in_w * ratio))
    rows = binning._bilinear_matrix(in_h, out_h).astype(np.float32)
    cols = binning._bilinear_matrix(in_w, out_w).astype(np.float32)
    top, left = (out_h - height) // 2, (out_w - width) // 2
    rows, cols = rows[top:top + height], cols[left:left + width]
    return np.einsum("yh,nchw,xw->ncyx", rows, images, cols, optimize=True).astype(images.dtype)


@pytest.mark.parametrize("n,src,dst", [
    (1, (64, 64), (512, 512)), (1, (44, 88), (256, 512)), (1, (72, 56), (151, 231)), (1, (64, 64), (30, 100)),
    (2, (64, 60), (20, 30)), (3, (24, 40), (18, 33)), (2, (16, 16), (40, 24)), (2, (20, 12), (20, 13))])
def test_the_resize_keeps_the_values_of_the_einsum_it_replaced(n, src, dst):
    """Bit for bit: each image as the einsum resized it alone, whichever of rows or columns it contracts first
    (64 x 64 -> 30 x 100 and landscape upscales go columns first), in a new array, into `empty_resized`'s
    array, and into `resized`'s one reused buffer. (A batch of several gave the einsum other roundings, in the
    last bit, depending on the batch: BLAS splits the product differently.)"""
    x = np.random.default_rng(1).standard_normal((n, 3, *src), dtype=np.float32)
    expected = np.concatenate([einsum_resize(x[i:i + 1], *dst) for i in range(n)])
    np.testing.assert_array_equal(binning.resize_and_center_crop(x, *dst), expected)
    out = binning.empty_resized(n, 3, *dst, *src)
    assert all(np.shares_memory(image, out[i]) for i, image in enumerate(binning.resized(x, *dst, out=out)))
    np.testing.assert_array_equal(out, expected)
    for i, image in enumerate(binning.resized(x, *dst)):
        np.testing.assert_array_equal(image, expected[i])
    if n == 1:
        np.testing.assert_array_equal(binning.resize_and_center_crop(x, *dst), einsum_resize(x, *dst))


def test_a_resize_to_the_same_size_yields_the_images_themselves():
    x = np.zeros((2, 3, 8, 8), np.float32)
    assert binning.resize_and_center_crop(x, 8, 8) is x
    assert all(image.base is x for image in binning.resized(x, 8, 8))
    assert binning.resize_bytes(2, 3, 8, 8, 8, 8) == 0 and binning.resize_bytes(2, 3, 8, 8, 16, 16, "latent") == 0


MiB = 2 ** 20


@pytest.mark.parametrize("n,src,dst,output_type,expected", [
    # 8192^2 from 1024^2, rows first: BLAS 32 MiB; matrices 64, the first product 96 (twice: it and its
    # transposed copy), a float image 768, its pixels 192, a PIL image 256
    # 1056 MiB (measured: 1055)
    (1, (1024, 1024), (8192, 8192), "pil", 32 + max(64 + max(2 * 96, 96 + 768, 768 + 192), 192 + 256)),
    (1, (1024, 1024), (8192, 8192), "np", 32 + 64 + 96 + max(96, 768)),  # measured 959 MiB
    (2, (1024, 1024), (4096, 4096), "np", 32 + 32 + 48 + 192 + max(48, 192)),  # measured 491 MiB
    (2, (1024, 1024), (4096, 4096), "pil", 32 + max(32 + 48 + max(2 * 48 + 192, 48 + 192, 192 + 48), 48 + 128)),
    # landscape: columns first, the first product (3, 704, 8192) is 66 MiB; matrices 11 + 44 MiB
    (1, (704, 1408), (4096, 8192), "pil", 32 + max(55 + max(2 * 66, 66 + 384, 384 + 96), 96 + 128)),  # 566
])
def test_resize_bytes_counts_what_the_resize_holds(n, src, dst, output_type, expected):
    """The most the resize and the conversion hold at once (measured growth of the RSS in the comments)."""
    assert binning.resize_bytes(n, 3, *src, *dst, output_type) == expected * MiB
