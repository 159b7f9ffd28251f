"""PixArt transformer parity against diffusers on tiny random weights in the published layout."""

import mindspore as ms
import numpy as np
import pytest

from studio.models.transformer import PixArtTransformer2DModel, PixArtTransformerConfig, sincos_2d
from tests.util import rel_l2

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

TINY = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
            cross_attention_dim=16, caption_channels=24, sample_size=8, patch_size=2, norm_eps=1e-6)


def reference_model(tmp_path, **overrides):
    torch.manual_seed(0)
    ref = diffusers.PixArtTransformer2DModel(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # the tables start random in the reference too; make every parameter matter
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref.save_pretrained(tmp_path / "transformer")
    return ref


@pytest.mark.parametrize("hw", [(8, 8), (8, 12), (16, 6)])
def test_transformer_matches_diffusers(tmp_path, hw):
    ref = reference_model(tmp_path, use_additional_conditions=False)
    ours = PixArtTransformer2DModel.from_pretrained(tmp_path / "transformer")
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((2, 4, *hw)).astype(np.float32)
    caption = rng.standard_normal((2, 7, 24)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]], dtype=np.int64)
    t = np.array([999, 421], dtype=np.int64)
    with torch.no_grad():
        expected = ref(torch.from_numpy(latents), encoder_hidden_states=torch.from_numpy(caption),
                       timestep=torch.from_numpy(t), encoder_attention_mask=torch.from_numpy(mask),
                       added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample.numpy()
    context = ours.encode_context(ms.Tensor(caption))
    actual = ours(ms.Tensor(latents), ms.Tensor(t), context, ms.Tensor(mask)).asnumpy()
    assert actual.shape == expected.shape == (2, 8, *hw)
    assert rel_l2(actual, expected) <= 1e-4


def test_transformer_with_affine_norms_matches_diffusers(tmp_path):
    """norm_elementwise_affine: the blocks' LayerNorms carry a weight and bias, applied before adaLN."""
    ref = reference_model(tmp_path, use_additional_conditions=False, norm_elementwise_affine=True)
    ours = PixArtTransformer2DModel.from_pretrained(tmp_path / "transformer")
    rng = np.random.default_rng(4)
    latents = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    caption = rng.standard_normal((2, 5, 24)).astype(np.float32)
    t = np.array([500, 20], dtype=np.int64)
    with torch.no_grad():
        expected = ref(torch.from_numpy(latents), encoder_hidden_states=torch.from_numpy(caption),
                       timestep=torch.from_numpy(t),
                       added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample.numpy()
    actual = ours(ms.Tensor(latents), ms.Tensor(t), ours.encode_context(ms.Tensor(caption))).asnumpy()
    assert rel_l2(actual, expected) <= 1e-4


def test_transformer_with_size_conditions_matches_diffusers(tmp_path):
    """PixArt-alpha-style resolution / aspect-ratio conditioning (use_additional_conditions)."""
    ref = reference_model(tmp_path, use_additional_conditions=True, num_attention_heads=3,
                          cross_attention_dim=24)
    ours = PixArtTransformer2DModel.from_pretrained(tmp_path / "transformer")
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    caption = rng.standard_normal((2, 5, 24)).astype(np.float32)
    t = np.array([10, 10], dtype=np.int64)
    res = np.array([[512.0, 768.0]] * 2, dtype=np.float32)
    ar = np.array([[1.5]] * 2, dtype=np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(latents), encoder_hidden_states=torch.from_numpy(caption),
                       timestep=torch.from_numpy(t),
                       added_cond_kwargs={"resolution": torch.from_numpy(res),
                                          "aspect_ratio": torch.from_numpy(ar)}).sample.numpy()
    context = ours.encode_context(ms.Tensor(caption))
    actual = ours(ms.Tensor(latents), ms.Tensor(t), context, None, ms.Tensor(res), ms.Tensor(ar)).asnumpy()
    assert rel_l2(actual, expected) <= 1e-4


@pytest.mark.parametrize("grid,base,scale", [((64, 64), 64, 1), ((128, 128), 64, 2), ((48, 80), 64, 2),
                                             ((135, 240), 128, 4)])
def test_position_code_matches_diffusers(grid, base, scale):
    from diffusers.models.embeddings import get_2d_sincos_pos_embed
    expected = get_2d_sincos_pos_embed(96, grid, base_size=base, interpolation_scale=scale).float().numpy()
    assert rel_l2(sincos_2d(96, *grid, base, scale), expected) <= 1e-6


def test_unknown_config_key_is_rejected():
    from studio.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown key 'num_heads'"):
        PixArtTransformerConfig.from_dict({**TINY, "num_heads": 3})
