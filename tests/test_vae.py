"""AutoencoderKL parity against diffusers on tiny random weights in the published layout."""

import mindspore as ms
import numpy as np
import pytest

from studio.errors import ConfigError
from studio.models.vae import AutoencoderKL, AutoencoderKLConfig
from tests.util import rel_l2

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

TINY = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32), layers_per_block=2,
            norm_num_groups=8, sample_size=32, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3)
SMALL = {**TINY, "block_out_channels": (16, 32), "layers_per_block": 1, "down_block_types": ("DownEncoderBlock2D",) * 2,
         "up_block_types": ("UpDecoderBlock2D",) * 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(reference, ours): one random diffusers VAE, saved with save_pretrained and loaded by studio."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**TINY).eval()
    with torch.no_grad():  # GroupNorm starts at weight 1, bias 0; move every parameter so each one matters
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("pipe") / "vae"
    ref.save_pretrained(folder, safe_serialization=True)
    return ref, AutoencoderKL.from_pretrained(folder)


def test_decode_matches_diffusers(models):
    ref, ours = models
    z = np.random.default_rng(1).standard_normal((2, 4, 8, 12)).astype(np.float32)
    with torch.no_grad():
        expected = ref.decode(torch.from_numpy(z)).sample.numpy()
    actual = ours.decode(ms.Tensor(z)).asnumpy()
    assert actual.shape == expected.shape == (2, 3, 32, 48)
    assert rel_l2(actual, expected) <= 1e-4


def test_encode_matches_diffusers(models):
    ref, ours = models
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 32, 48)).astype(np.float32)
    with torch.no_grad():
        dist = ref.encode(torch.from_numpy(x)).latent_dist
    mean, logvar = ours.encode(ms.Tensor(x))
    assert mean.shape == logvar.shape == (2, 4, 8, 12)
    assert rel_l2(mean.asnumpy(), dist.mean.numpy()) <= 1e-4
    assert rel_l2(logvar.asnumpy(), dist.logvar.numpy()) <= 1e-4


def test_logvar_is_clamped_like_diffusers(tmp_path):
    """quant_conv biases push two logvar channels past the reference's clamp range [-30, 20], one each way."""
    torch.manual_seed(3)
    ref = diffusers.AutoencoderKL(**SMALL).eval()
    with torch.no_grad():
        ref.quant_conv.bias[4:8] += torch.tensor([40.0, -60.0, 0.0, 0.0])
    ref.save_pretrained(tmp_path / "vae", safe_serialization=True)
    ours = AutoencoderKL.from_pretrained(tmp_path / "vae")
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = ref.encode(torch.from_numpy(x)).latent_dist.logvar.numpy()
    _, logvar = ours.encode(ms.Tensor(x))
    assert (expected[:, 0] == 20.0).all() and (expected[:, 1] == -30.0).all()
    assert rel_l2(logvar.asnumpy(), expected) <= 1e-4


def test_without_mid_attention_and_quant_convs(tmp_path):
    torch.manual_seed(4)
    ref = diffusers.AutoencoderKL(**SMALL, mid_block_add_attention=False, use_quant_conv=False,
                                  use_post_quant_conv=False)
    ref.save_pretrained(tmp_path / "vae", safe_serialization=True)
    ours = AutoencoderKL.from_pretrained(tmp_path / "vae")
    z = np.random.default_rng(5).standard_normal((1, 4, 6, 5)).astype(np.float32)
    with torch.no_grad():
        expected = ref.decode(torch.from_numpy(z)).sample.numpy()
    assert rel_l2(ours.decode(ms.Tensor(z)).asnumpy(), expected) <= 1e-4


def test_sdxl_config_is_accepted():
    config = AutoencoderKLConfig.from_dict({
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.20.0.dev0", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "force_upcast": True, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
        "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025, "up_block_types": ["UpDecoderBlock2D"] * 4})
    assert config.block_out_channels == (128, 256, 512, 512) and config.scaling_factor == 0.13025
    assert config.use_quant_conv and config.use_post_quant_conv and config.mid_block_add_attention


@pytest.mark.parametrize("extra,match", [({"num_heads": 3}, "unknown key 'num_heads'"),
                                         ({"act_fn": "gelu"}, "act_fn 'gelu'"),
                                         ({"up_block_types": ["AttnUpDecoderBlock2D"] * 3}, "up_block_types")])
def test_bad_config_is_rejected(extra, match):
    with pytest.raises(ConfigError, match=match):
        AutoencoderKLConfig.from_dict({**TINY, **extra})


def test_force_upcast_decides_the_vae_dtype_of_a_half_precision_pipeline(tiny_dir, tmp_path):
    """PixArt-Sigma publishes its VAE with force_upcast false: an fp16 pipeline decodes in fp16, as diffusers
    does; a config saying true decodes in fp32 (as diffusers' SDXL pipeline), and the plan counts its weights
    at 4 bytes then."""
    import json
    import shutil
    from dataclasses import replace

    from studio.memory_plan import plan_generation, vae_params
    from studio.pipeline import PixArtSigmaPipeline

    upcast = shutil.copytree(tiny_dir, tmp_path / "upcast")
    config = upcast / "vae" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "force_upcast": True}))
    with pytest.warns(UserWarning, match="^studio: float16 on the CPU"):  # slower there (test_pipeline.py)
        assert PixArtSigmaPipeline.from_pretrained(tiny_dir, dtype="float16").vae_dtype == ms.float16
        pipe = PixArtSigmaPipeline.from_pretrained(upcast, dtype="float16")
    assert pipe.vae_dtype == ms.float32
    tr, t5 = pipe.transformer.config, pipe._t5_config
    weights = [plan_generation(tr, t5, vae, 256, 256, 1, None, True, 2).phases[-1].weights
               for vae in (pipe.vae.config, replace(pipe.vae.config, force_upcast=False))]
    assert weights[0] - weights[1] == 2 * vae_params(pipe.vae.config)


def test_a_bfloat16_vae_loaded_on_its_own_computes_in_float32_and_says_so(tiny_dir):
    """As the pipeline does: MindSpore's CPU has no bf16 convolution (a C++ 'Kernel select failed' before)."""
    with pytest.warns(UserWarning, match=r"^studio: bfloat16 computes in float32 here: MindSpore has no bfloat16 "
                                         r"matmul on the CPU") as caught:
        vae = AutoencoderKL.from_pretrained(tiny_dir / "vae", ms.bfloat16)
    assert caught[0].filename == __file__  # the caller's line
    latent = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    expected = AutoencoderKL.from_pretrained(tiny_dir / "vae").decode(ms.Tensor(latent)).asnumpy()
    assert np.array_equal(vae.decode(ms.Tensor(latent)).asnumpy(), expected)
