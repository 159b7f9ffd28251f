"""A tiny PixArt-Sigma pipeline with random weights, written in the published diffusers layout.

For smoke runs and tests on machines without the real weights: every image it makes is NOISE. The
folder has the published structure (model_index.json; transformer/, vae/ with
diffusion_pytorch_model.safetensors; text_encoder/ sharded through model.safetensors.index.json;
tokenizer/ with spiece.model; scheduler/scheduler_config.json), so diffusers loads it too.
"""

import json
import os
import threading
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from studio.progress import write_line
from studio.tiny_tokenizer import VOCAB_SIZE, write_tiny_tokenizer

NOISE_NOTICE = "tiny random checkpoint: its output is noise, not an image of the prompt"

MODEL_INDEX = {
    "_class_name": "PixArtSigmaPipeline", "_diffusers_version": "0.28.0.dev0",
    "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"], "_studio_tiny": NOISE_NOTICE,
}

# The published PixArt-Sigma scheduler config.
SCHEDULER = {
    "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.22.0.dev0",
    "algorithm_type": "dpmsolver++", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
    "dynamic_thresholding_ratio": 0.995, "euler_at_final": False, "lambda_min_clipped": float("-inf"),
    "lower_order_final": True, "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "solver_order": 2, "solver_type": "midpoint", "steps_offset": 0,
    "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None, "use_karras_sigmas": False,
    "use_lu_lambdas": False, "variance_type": None,
}


def transformer_config(sample_size: int = 128, caption_channels: int = 32) -> dict:
    """As the published PixArt-Sigma transformers' configs are written: the class diffusers had before
    PixArtTransformer2DModel, its four keys PixArt doesn't use, and interpolation_scale explicit (the 256 px
    model's 0.5; sample_size / 64 for the others, what null gives)."""
    return {
        "_class_name": "Transformer2DModel", "_diffusers_version": "0.28.0.dev0",
        "activation_fn": "gelu-approximate", "attention_bias": True, "attention_head_dim": 16,
        "attention_type": "default", "caption_channels": caption_channels, "cross_attention_dim": 32,
        "double_self_attention": False, "dropout": 0.0, "in_channels": 4,
        "interpolation_scale": 0.5 if sample_size == 32 else max(sample_size // 64, 1),
        "norm_elementwise_affine": False, "norm_eps": 1e-6, "norm_num_groups": 32, "norm_type": "ada_norm_single",
        "num_attention_heads": 2, "num_embeds_ada_norm": 1000, "num_layers": 2, "num_vector_embeds": None,
        "only_cross_attention": False, "out_channels": 8, "patch_size": 2,
        "sample_size": sample_size, "upcast_attention": False, "use_additional_conditions": False,
        "use_linear_projection": False,
    }


def t5_config(d_model: int = 32) -> dict:
    """With the published text encoder's bookkeeping keys (_name_or_path, decoder_start_token_id,
    transformers_version) as it has them."""
    return {
        "_name_or_path": "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers", "architectures": ["T5EncoderModel"],
        "classifier_dropout": 0.0, "d_ff": 2 * d_model, "d_kv": 8, "d_model": d_model, "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0, "is_encoder_decoder": True,
        "is_gated_act": True, "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_decoder_layers": 2,
        "num_heads": 4, "num_layers": 2, "output_past": True, "pad_token_id": 0,
        "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32, "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "4.38.2", "use_cache": True, "vocab_size": VOCAB_SIZE,
    }


def vae_config(block_out_channels=(8, 8, 16, 16), groups: int = 4) -> dict:
    n = len(block_out_channels)
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.20.0.dev0", "act_fn": "silu",
        "block_out_channels": list(block_out_channels), "down_block_types": ["DownEncoderBlock2D"] * n,
        "force_upcast": False, "in_channels": 3, "latent_channels": 4,
        "layers_per_block": 1,  # the published VAE has 2
        "norm_num_groups": groups, "out_channels": 3, "sample_size": 512, "scaling_factor": 0.13025,
        "up_block_types": ["UpDecoderBlock2D"] * n,
    }


def random_weights(model, seed: int) -> dict[str, np.ndarray]:
    """Random float32 tensors for every parameter of `model`, scaled to keep activations near unit size:
    matrices ~ N(0, 1/fan_in), norm scales ~ 1, biases and tables small."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, p in model.parameters_and_names():
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        if len(shape) >= 2 and leaf == "weight":
            fan_in = int(np.prod(shape[1:]))
            if "relative_attention_bias" in name or name.endswith("shared.weight"):
                fan_in = 1
            w = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif leaf == "weight" and ("norm" in name or "layer_norm" in name):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith("scale_shift_table"):
            w = rng.standard_normal(shape) / np.sqrt(shape[-1])
        else:
            w = 0.02 * rng.standard_normal(shape)
        out[name] = w.astype(np.float32)
    return out


def _write(path: Path, data: bytes) -> None:
    """path.write_bytes(data), an error naming the file (a full disk's names none)."""
    from studio.export import naming

    with naming(path):
        path.write_bytes(data)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _save_file(tensors: dict[str, np.ndarray], path: Path) -> None:
    """safetensors' save_file, with Python's I/O: its errors are OSErrors (save_file's are SafetensorErrors)."""
    _write(path, save(tensors, metadata={"format": "pt"}))


def _save_sharded(tensors: dict[str, np.ndarray], folder: Path, stem: str, shards: int) -> None:
    """Split into `shards` files named like transformers' (model-00001-of-00002.safetensors) plus the index."""
    names = sorted(tensors)
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    total = 0
    for i, group in enumerate(groups, 1):
        fname = f"{stem}-{i:05d}-of-{shards:05d}.safetensors"
        _save_file({k: tensors[k] for k in group}, folder / fname)
        weight_map.update({k: fname for k in group})
        total += sum(tensors[k].nbytes for k in group)
    _write_json(folder / f"{stem}.safetensors.index.json", {"metadata": {"total_size": total},
                                                           "weight_map": dict(sorted(weight_map.items()))})


def note_if_tiny(model_id, pipe, file=None) -> None:
    """Say on `file` (stderr, above its progress bars) that the loaded pipeline `pipe` is a tiny random
    checkpoint, when it is: its output is noise."""
    if pipe.tiny_notice:
        write_line(f"note: {model_id}: {pipe.tiny_notice}", file)


def make_tiny(folder, sample_size: int = 128, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the tiny random pipeline into `folder` (created; must be empty or absent, or with overwrite a
    pipeline folder: one holding model_index.json, never a folder of other files). Returns its absolute path.

    All or nothing: the pipeline is written into a hidden folder beside it, which then takes its place in
    one rename (with overwrite, the old folder is moved aside first and removed after); a run killed on the
    way leaves only that hidden folder, which the next run removes.
    """
    from studio.errors import InputError
    from studio.export import check_writable, remove_temporaries, temporary_folder

    given, folder = Path(folder), Path(os.path.abspath(folder))  # '.' has no name to put a folder beside
    if Path.cwd().resolve().is_relative_to(folder.resolve()):  # renamed away, it would leave the shell nowhere
        raise InputError(f"{given}: is the working folder{'' if folder.samefile('.') else ' or holds it'}; make-tiny "
                         f"replaces its folder whole: name another one (e.g. make-tiny tiny)")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{given}: is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / "model_index.json").is_file():  # a folder of other files is never replaced
            raise InputError(f"{given}: not a pipeline folder (no model_index.json) and not empty; nothing was "
                             f"changed (only a pipeline folder is replaced, with --overwrite)")
        if not overwrite:
            raise InputError(f"{given}: folder exists and is not empty (pass --overwrite, or overwrite=True, to "
                             f"replace its files)")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder.parent}: cannot create it ({e.strerror or type(e).__name__})") from None
    check_writable(folder.parent)  # said as export says it, not by a failure to make tmp
    remove_temporaries(folder.parent, {folder.name}, remove=_remove_tree)  # what killed runs left (pid 1's too)
    tmp = temporary_folder(folder.parent, folder.name)  # this thread's: another's clean-up leaves it
    try:
        _write_tiny(tmp, sample_size, seed)
        with _SWAP:  # another thread's swap between the test and the renames would leave this one no folder
            _swap_in(tmp, folder)
    except OSError as e:  # said of the file in the folder asked for, not in the hidden one (a full disk's: the folder)
        where = Path(e.filename) if isinstance(e.filename, str) else tmp
        if e.errno is None or not where.is_relative_to(tmp):
            raise
        raise OSError(e.errno, e.strerror, str(given / where.relative_to(tmp))) from e
    finally:
        _remove_tree(tmp)
    return folder


_SWAP = threading.Lock()  # make_tiny's renames into place, one thread at a time


def _swap_in(tmp: Path, folder: Path) -> None:
    """Put the written pipeline `tmp` in place of `folder`: an old pipeline there is moved aside first and removed
    after, an empty folder removed."""
    if folder.is_dir() and any(folder.iterdir()):
        old = tmp.with_name(tmp.name + ".old")
        os.rename(folder, old)
        os.rename(tmp, folder)
        _remove_tree(old)
    else:
        if folder.is_dir():
            folder.rmdir()
        os.rename(tmp, folder)


def _write_tiny(tmp: Path, sample_size: int, seed: int) -> None:
    from studio.models.t5 import T5Config, T5EncoderModel
    from studio.models.transformer import PixArtTransformer2DModel, PixArtTransformerConfig
    from studio.models.vae import AutoencoderKL, AutoencoderKLConfig

    t5 = t5_config()
    tr = transformer_config(sample_size=sample_size, caption_channels=t5["d_model"])
    vae = vae_config()
    _write_json(tmp / "model_index.json", MODEL_INDEX)
    _write_json(tmp / "scheduler" / "scheduler_config.json", SCHEDULER)
    write_tiny_tokenizer(tmp / "tokenizer")
    for sub, cfg, build, fname in [
        ("transformer", tr, lambda c: PixArtTransformer2DModel(PixArtTransformerConfig.from_dict(c)),
         "diffusion_pytorch_model.safetensors"),
        ("vae", vae, lambda c: AutoencoderKL(AutoencoderKLConfig.from_dict(c)), "diffusion_pytorch_model.safetensors"),
        ("text_encoder", t5, lambda c: T5EncoderModel(T5Config.from_dict(c)), None),
    ]:
        _write_json(tmp / sub / "config.json", cfg)
        weights = random_weights(build(cfg), seed)
        seed += 1
        if fname:
            _save_file(weights, tmp / sub / fname)
        else:
            _save_sharded(weights, tmp / sub, "model", shards=2)


def _remove_tree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)
