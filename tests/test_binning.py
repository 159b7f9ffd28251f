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
