"""Loading a pipeline folder: configs of the wrong type or shape, the tokenizer, schedulers studio can't run;
everything checked before any weight is read, each problem one line naming the file."""

import json
import shutil

import mindspore as ms
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from studio import checkpoint
from studio.errors import CheckpointError, ConfigError, InputError
from studio.pipeline import PixArtSigmaPipeline, as_dtype
from studio.tiny import SCHEDULER
from tests.util import rel_l2

CONFIGS = {"transformer": "transformer/config.json", "vae": "vae/config.json",
           "text_encoder": "text_encoder/config.json", "scheduler": "scheduler/scheduler_config.json"}


@pytest.fixture
def broken(tiny_dir, tmp_path, monkeypatch):
    """A fresh copy of the tiny pipeline to break, whose weights must not be read: every problem here is found
    before (the published XL weights take minutes to read)."""
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(checkpoint, "load_weights", no_weights)
    return shutil.copytree(tiny_dir, tmp_path / "copy")


def edit(folder, rel: str, **changes) -> None:
    path = folder / rel
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def load_error(folder, error=CheckpointError) -> str:
    with pytest.raises(error) as info:
        PixArtSigmaPipeline.from_pretrained(folder)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("component,key,value,expected", [
    ("transformer", "num_layers", "2", "'num_layers' is \"2\"; expected an integer of at least 1"),
    ("transformer", "num_layers", None, "'num_layers' is null; expected an integer of at least 1"),
    ("transformer", "attention_head_dim", 0, "'attention_head_dim' is 0; expected an integer of at least 1"),
    ("transformer", "norm_eps", "1e-6", "'norm_eps' is \"1e-6\"; expected a finite number"),
    ("transformer", "norm_eps", float("nan"), "'norm_eps' is NaN; expected a finite number"),
    ("vae", "scaling_factor", float("inf"), "'scaling_factor' is Infinity; expected a finite number"),
    ("vae", "latents_mean", [0.5, float("-inf")], "'latents_mean' is [0.5, -Infinity]; expected a list of finite "
                                                  "numbers or null"),
    ("text_encoder", "layer_norm_epsilon", float("nan"), "'layer_norm_epsilon' is NaN; expected a finite number"),
    ("scheduler", "beta_end", float("inf"), "'beta_end' is Infinity; expected a finite number"),
    ("scheduler", "lambda_min_clipped", float("inf"), "'lambda_min_clipped' is Infinity; expected a finite number"),
    ("transformer", "kv_compress_layers", 3, "'kv_compress_layers' is 3; expected a list of integers"),
    ("vae", "block_out_channels", 64, "'block_out_channels' is 64; expected a list of integers"),
    ("vae", "latent_channels", "4", "'latent_channels' is \"4\"; expected an integer of at least 1"),
    ("vae", "force_upcast", 1, "'force_upcast' is 1; expected true or false"),
    ("vae", "sample_size", [64, "x"], "'sample_size' is [64, \"x\"]; expected an integer of at least 1 or a list of "
                                      "integers"),
    ("text_encoder", "num_layers", "2", "'num_layers' is \"2\"; expected an integer of at least 1"),
    ("text_encoder", "feed_forward_proj", None, "'feed_forward_proj' is null; expected a string"),
    ("scheduler", "num_train_timesteps", "1000", "'num_train_timesteps' is \"1000\"; expected an integer"),
    ("scheduler", "solver_order", 2.0, "'solver_order' is 2.0; expected an integer"),  # its default's value, a float
])
def test_config_values_of_the_wrong_type_name_file_key_value_and_type(broken, component, key, value, expected):
    edit(broken, CONFIGS[component], **{key: value})
    assert load_error(broken) == f"{broken / CONFIGS[component]}: {expected}"


def test_a_load_error_names_the_model_only_when_the_model_is_what_is_missing(broken):
    """A bad file in the model is no error about the model (its `model` None: the CLI adds no '(from
    $STUDIO_MODEL)'); a folder that is no model is."""
    edit(broken, CONFIGS["vae"], force_upcast=1)
    with pytest.raises(CheckpointError) as info:
        PixArtSigmaPipeline.from_pretrained(broken)
    assert str(info.value).startswith(f"{broken / CONFIGS['vae']}: ") and info.value.model is None
    (broken / "model_index.json").unlink()
    shutil.rmtree(broken / "transformer")  # (a transformer alone is completed with a base pipeline)
    with pytest.raises(CheckpointError) as info:
        PixArtSigmaPipeline.from_pretrained(str(broken))
    assert str(info.value).startswith(f"{broken}: no model_index.json") and info.value.model == str(broken)


def test_a_transformer_saved_by_diffusers_ema_model_loads(tiny_dir, tmp_path):
    """EMAModel.save_pretrained writes its training state (decay, optimization_step, ...) into the transformer's
    config.json, which diffusers loads: so does studio, those keys ignored (they were 'unknown keys')."""
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from diffusers.training_utils import EMAModel

    folder = shutil.copytree(tiny_dir, tmp_path / "copy")
    model = diffusers.PixArtTransformer2DModel.from_pretrained(folder / "transformer")
    EMAModel(model.parameters(), model_cls=diffusers.PixArtTransformer2DModel,
             model_config=model.config).save_pretrained(folder / "transformer")
    written = json.loads((folder / CONFIGS["transformer"]).read_text())
    assert checkpoint.EMA_KEYS <= written.keys() and written["decay"] == 0.9999
    pipe = PixArtSigmaPipeline.from_pretrained(folder)
    assert pipe.transformer.config == PixArtSigmaPipeline.from_pretrained(tiny_dir).transformer.config
    tensors = load_file(str(tiny_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    for name, p in pipe.transformer.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), tensors[name], err_msg=name)


@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_a_mindspore_type_studio_cant_compute_in_is_refused_at_load(broken, dtype):
    """dtype=mindspore.float64 or int32 is one line at load, as the name 'float64' is, not a MindSpore error at
    the first call; the types studio computes in are taken."""
    with pytest.raises(InputError) as info:
        PixArtSigmaPipeline.from_pretrained(broken, dtype=getattr(ms, dtype))
    assert str(info.value) == (f"dtype mindspore.{dtype} is not one of float32, fp32, float16, fp16, bfloat16, bf16 "
                               "(or mindspore.float32, float16, bfloat16)")
    with pytest.raises(InputError, match=f"^dtype '{dtype}' is not one of float32"):
        PixArtSigmaPipeline.from_pretrained(broken, dtype=dtype)
    assert [as_dtype(t) for t in (ms.float32, ms.float16, ms.bfloat16)] == [ms.float32, ms.float16, ms.bfloat16]


@pytest.mark.parametrize("component,key,value,expected", [
    ("transformer", "norm_eps", -1.0, "norm_eps=-1.0 must be > 0"),
    ("transformer", "norm_eps", 0, "norm_eps=0 must be > 0"),
    ("transformer", "interpolation_scale", 0.0, "interpolation_scale=0.0 must be > 0"),
    ("text_encoder", "layer_norm_epsilon", -1e-6, "layer_norm_epsilon=-1e-06 must be > 0"),
    ("vae", "scaling_factor", 0, "scaling_factor=0 must not be 0 (latents are divided by it)"),
])
def test_config_values_out_of_range_name_file_key_and_range(broken, component, key, value, expected):
    """norm_eps -1.0 made a black image, exit status 0; a published config's values load (the tiny pipeline's are
    copies of them, the scheduler's lambda_min_clipped -Infinity included)."""
    edit(broken, CONFIGS[component], **{key: value})
    assert load_error(broken, ConfigError) == f"{broken / CONFIGS[component]}: {expected}"


SHARDS = "model-00001-of-00002.safetensors, model-00002-of-00002.safetensors"


@pytest.mark.parametrize("change,where,expected", [
    ({"num_layers": 3}, f"text_encoder ({SHARDS})", "missing key 'encoder.block.2.layer.0.SelfAttention.q.weight' in "
                                                    "the checkpoint (and 8 more)"),
    ({"num_layers": 1}, "text_encoder/model-00001-of-00002.safetensors",
     "unexpected key 'encoder.block.1.layer.0.SelfAttention.k.weight' (not a parameter of T5EncoderModel)"),
    ({"d_ff": 48}, "text_encoder/model-00001-of-00002.safetensors",
     "key 'encoder.block.0.layer.1.DenseReluDense.wi_0.weight' has shape [64, 32], the model expects [48, 32]"),
    ({"relative_attention_num_buckets": 16}, "text_encoder/model-00002-of-00002.safetensors",
     "key 'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight' has shape [32, 4], the model "
     "expects [16, 4]"),
])
def test_a_text_encoder_config_its_weights_do_not_fit_is_refused_at_load(broken, change, where, expected):
    """From the weight files' headers when the pipeline loads (no weight is read), not at the first prompt, where
    the streamed text encoder reads its weights."""
    edit(broken, CONFIGS["text_encoder"], **change)
    assert load_error(broken) == f"{broken / where}: {expected}"


def _rename_first_key(path):
    weights = load_file(path)
    first = sorted(weights)[0]
    save_file({("renamed." + k if k == first else k): v for k, v in weights.items()}, path)
    return f"unexpected key 'renamed.{first}' (not a parameter of AutoencoderKL)"


def _truncate(path):
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-4])
    return f"truncated safetensors file: key '{_last_key(path)}' ends at byte {size}, file has {size - 4}"


def _last_key(path):
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    return max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])


def _garbage_header(path):
    data = path.read_bytes()
    path.write_bytes(b"\xff" * 8 + data[8:])
    return f"truncated or corrupt safetensors file (header of {2 ** 64 - 1} bytes, file of {len(data)})"


def _reshape_last(path):
    weights = load_file(path)
    key = _last_key(path)
    save_file({**weights, key: weights[key].reshape(-1)[:-1]}, path)
    return f"key '{key}' has shape [{weights[key].size - 1}], the model expects {list(weights[key].shape)}"


@pytest.mark.parametrize("damage", [_rename_first_key, _truncate, _garbage_header, _reshape_last])
def test_a_damaged_vae_fails_the_load_before_any_tensor_is_read(broken, monkeypatch, damage):
    """A VAE file that doesn't fit its model fails from its header, before the transformer's tensors (minutes of
    them for XL) are read: the error load_weights(vae) gave after them."""
    def no_tensor(*args, **kwargs):
        raise AssertionError("a tensor was read")

    monkeypatch.setattr(checkpoint.SafetensorsFile, "array", no_tensor)
    path = broken / "vae" / "diffusion_pytorch_model.safetensors"
    expected = damage(path)
    calls = []
    with pytest.raises(CheckpointError) as info:
        PixArtSigmaPipeline.from_pretrained(broken, progress=lambda done, total: calls.append(done))
    assert str(info.value) == f"{path}: {expected}" and calls == []


def test_a_vae_without_blocks_is_refused(broken):
    edit(broken, CONFIGS["vae"], block_out_channels=[], down_block_types=[], up_block_types=[])
    assert load_error(broken, ConfigError) == (f"{broken / CONFIGS['vae']}: block_out_channels []: expected one "
                                               "positive channel count per block")


@pytest.mark.parametrize("rel", ["model_index.json", *CONFIGS.values(), "text_encoder/model.safetensors.index.json"])
@pytest.mark.parametrize("text", ["null", "[1]", '"x"'])
def test_json_that_is_not_an_object_is_refused(broken, rel, text):
    (broken / rel).write_text(text)
    assert load_error(broken) == f"{broken / rel}: holds {text}, expected a JSON object {{...}}"


@pytest.mark.parametrize("component,writer", [("transformer", "diffusers"), ("vae", "diffusers"),
                                              ("text_encoder", "transformers")])
def test_an_unknown_config_key_names_the_file_and_what_to_do(broken, component, writer):
    edit(broken, CONFIGS[component], new_future_flag=False)
    assert load_error(broken, ConfigError) == (
        f"{broken / CONFIGS[component]}: unknown key 'new_future_flag': studio doesn't know it (a newer {writer} may "
        "have written it); if it holds its default value, remove it from the file, else this model needs what "
        "studio doesn't implement")


@pytest.mark.parametrize("component,change,expected", [
    ("transformer", {"norm_type": "layer_norm"}, "norm_type='layer_norm' is not supported (PixArt uses "
                                                 "'ada_norm_single')"),
    ("vae", {"act_fn": "gelu"}, "act_fn 'gelu': only 'silu' is supported"),
    ("text_encoder", {"feed_forward_proj": "gated-silu", "dense_act_fn": "silu"},
     "feed_forward_proj 'gated-silu' is not supported (allowed: gated-gelu, relu)"),
])
def test_an_unsupported_config_value_names_the_file(broken, component, change, expected):
    edit(broken, CONFIGS[component], **change)
    assert load_error(broken, ConfigError) == f"{broken / CONFIGS[component]}: {expected}"


# --- tokenizer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\x0a\xff\xff garbage, not a ModelProto"])
def test_an_empty_or_corrupt_spiece_model_is_one_line_naming_the_folder(broken, capfd, content):
    (broken / "tokenizer" / "spiece.model").write_bytes(content)
    message = load_error(broken)
    assert message.startswith(f"{broken / 'tokenizer'}: spiece.model is not a sentencepiece model (")
    assert "tiktoken" not in message and capfd.readouterr().err == ""


def test_a_tokenizer_that_is_not_t5s_is_refused(broken, capfd):
    edit(broken, "tokenizer/special_tokens_map.json", pad_token="</s>")
    edit(broken, "tokenizer/tokenizer_config.json", pad_token="</s>")
    assert load_error(broken) == (f"{broken / 'tokenizer'}: not a working T5 tokenizer ('<pad>' is id 1 and '</s>' "
                                  "id 1, where T5's are 0 and 1); copy the checkpoint's tokenizer folder again")
    assert capfd.readouterr().err == ""


PROMPTS = ["a red cat on a hill", "", "<extra_id_5> sentinel </s> café 猫 🐱", "x " * 400]


@pytest.mark.parametrize("keep", [("tokenizer.json",), ("spiece.model", "special_tokens_map.json")])
def test_a_tokenizer_folder_diffusers_loads_loads_with_the_same_ids(tiny_dir, tmp_path, keep):
    """As diffusers loads `tokenizer/` (T5Tokenizer, the class model_index.json names): tokenizer.json alone,
    or spiece.model without tokenizer_config.json; the ids are the published layout's."""
    from transformers import T5Tokenizer

    from studio.text import load_tokenizer, tokenize

    published = load_tokenizer(tiny_dir / "tokenizer")
    T5Tokenizer.from_pretrained(tiny_dir / "tokenizer").save_pretrained(tmp_path / "saved")  # writes tokenizer.json
    (tmp_path / "folder").mkdir()
    for name in keep:
        shutil.copy((tmp_path / "saved" if name == "tokenizer.json" else tiny_dir / "tokenizer") / name,
                    tmp_path / "folder")
    ids, mask = tokenize(load_tokenizer(tmp_path / "folder"), PROMPTS, 300)
    expected_ids, expected_mask = tokenize(published, PROMPTS, 300)
    assert np.array_equal(ids, expected_ids) and np.array_equal(mask, expected_mask)


def test_a_tokenizer_config_that_pads_on_the_left_encodes_as_the_published(tiny_dir, tmp_path):
    """padding_side 'left' (a re-saved tokenizer may say so) left the prompt's tokens past the positions the
    pipeline keeps: all padding, silently; the reference's features at the real positions are the same either
    way. truncation_side 'left' drops the start, and the warning names that part."""
    from studio.text import load_tokenizer, truncated_text

    folder = shutil.copytree(tiny_dir, tmp_path / "left")
    edit(folder, "tokenizer/tokenizer_config.json", padding_side="left", truncation_side="left")
    prompts = ["a red fox in the snow", "an owl"]
    features, mask = PixArtSigmaPipeline.from_pretrained(folder).encode_prompt(prompts)
    expected_features, expected_mask = PixArtSigmaPipeline.from_pretrained(tiny_dir).encode_prompt(prompts)
    assert np.array_equal(mask.asnumpy(), expected_mask.asnumpy()) and mask.asnumpy()[1].sum() < mask.shape[1]
    assert np.array_equal(features.asnumpy(), expected_features.asnumpy())
    tokenizer = load_tokenizer(folder / "tokenizer")
    # the tiny vocabulary's pieces: '▁', 'on', 'e', '▁t', 'w', 'o', '▁', 'th', 'ree', '▁fo', 'u', 'r', '▁f', 'i', ...
    assert truncated_text(tokenizer, "one two three four five", 5) == "one two three four"  # '▁f i v e </s>' kept
    assert truncated_text(load_tokenizer(tiny_dir / "tokenizer"), "one two three four five", 7) == "three four five"


def test_a_tokenizer_without_a_vocabulary_is_refused(tmp_path):
    """T5Tokenizer() saved as it is has the special tokens and sentinels only: every word is '<unk>'."""
    from transformers import T5Tokenizer

    from studio.text import load_tokenizer

    T5Tokenizer().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_tokenizer(tmp_path)
    assert str(info.value) == (f"{tmp_path}: not a working T5 tokenizer ('a photo of a cat' encodes to [3, 2, 3, 2, "
                               "3, 2, 3, 2, 3, 2, 1], with '<unk>' (2) among them); copy the checkpoint's tokenizer "
                               "folder again")


def test_a_tokenizer_larger_than_the_text_encoders_vocabulary_is_refused_at_load(broken):
    """Token ids past the embedding table would fail at generation (an IndexError in the streamed encoder)."""
    vocab = json.loads((broken / CONFIGS["text_encoder"]).read_text())["vocab_size"]
    edit(broken, CONFIGS["text_encoder"], vocab_size=vocab - 6)
    assert load_error(broken) == (f"{broken / 'tokenizer'}: the tokenizer has {vocab} tokens, the text encoder's "
                                  f"vocab_size is {vocab - 6}: the tokenizer and text_encoder folders come from "
                                  "different models")


def test_a_text_encoder_vocabulary_larger_than_the_tokenizers_encodes_as_the_unpadded(tiny_dir, tmp_path):
    """As published: T5's embedding has 32128 rows, its tokenizer 32100 tokens. Rows no token id reaches change
    nothing: the features are the unpadded encoder's, bit for bit."""
    folder = shutil.copytree(tiny_dir, tmp_path / "padded")
    encoder = folder / "text_encoder"
    vocab = json.loads((encoder / "config.json").read_text())["vocab_size"]
    index = json.loads((encoder / "model.safetensors.index.json").read_text())
    padded = []
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(encoder / shard)
        for name, w in tensors.items():
            if w.shape[0] == vocab:  # (vocab, d_model): shared.weight, and encoder.embed_tokens.weight if written
                extra = np.random.default_rng(5).standard_normal((28, w.shape[1])).astype(w.dtype)
                tensors[name] = np.concatenate([w, extra])  # (vocab + 28, d_model)
                index["metadata"]["total_size"] += extra.nbytes
                padded.append(name)
        save_file(tensors, encoder / shard, metadata={"format": "pt"})
    assert padded == ["shared.weight"]
    (encoder / "model.safetensors.index.json").write_text(json.dumps(index))
    edit(folder, CONFIGS["text_encoder"], vocab_size=vocab + 28)
    prompts = ["a red cat on a hill", "<extra_id_5> sentinel </s> café 猫"]
    pipe = PixArtSigmaPipeline.from_pretrained(folder)
    assert pipe.text_encoder.config.vocab_size == vocab + 28
    features, mask = pipe.encode_prompt(prompts)
    expected_features, expected_mask = PixArtSigmaPipeline.from_pretrained(tiny_dir).encode_prompt(prompts)
    assert np.array_equal(mask.asnumpy(), expected_mask.asnumpy())
    assert np.array_equal(features.asnumpy(), expected_features.asnumpy())


# --- scheduler ---------------------------------------------------------------------------------------


UNIPC = {**SCHEDULER, "_class_name": "UniPCMultistepScheduler", "solver_type": "bh2", "predict_x0": True,
         "disable_corrector": [], "solver_p": None}


ONE_OF = "expected one of DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler"


@pytest.mark.parametrize("config,problem,samplers,hint", [
    (UNIPC, f"_class_name='UniPCMultistepScheduler' is not supported; {ONE_OF}", ("dpm++", "ddim", "euler"),
     "'dpm++', 'ddim' or 'euler'"),
    ({**SCHEDULER, "_class_name": "EulerAncestralDiscreteScheduler"},
     f"_class_name='EulerAncestralDiscreteScheduler' is not supported; {ONE_OF}", ("dpm++", "ddim", "euler"),
     "'dpm++', 'ddim' or 'euler'"),
    ({**SCHEDULER, "algorithm_type": "sde-dpmsolver++"}, "algorithm_type='sde-dpmsolver++' is not supported; only "
     "'dpmsolver++'", ("ddim", "euler"), "'ddim' or 'euler'"),  # DDIM and Euler don't take algorithm_type
    ({**SCHEDULER, "trained_betas": [0.0001, 0.02]}, "trained_betas=[0.0001, 0.02] is not supported; only None", (),
     None),  # no sampler of studio's takes it
    ({**SCHEDULER, "beta_end": 2.0}, "beta_start=0.0001 and beta_end=2.0 must satisfy 0 < beta_start <= beta_end < 1",
     (), None),
])
def test_a_scheduler_studio_cant_run_is_replaced_by_a_calls_sampler(tiny_dir, tmp_path, config, problem, samplers,
                                                                    hint):
    """It loads; a call without sampler= says what to do, naming the samplers that take the file's settings; one
    with it runs that sampler from the file's settings (here PixArt's: the same latents as the published
    scheduler replaced by that sampler)."""
    folder = shutil.copytree(tiny_dir, tmp_path / "copy")
    path = folder / CONFIGS["scheduler"]
    path.write_text(json.dumps(config))
    edit(folder, "model_index.json", scheduler=["diffusers", config["_class_name"]])  # as diffusers saves it
    pipe = PixArtSigmaPipeline.from_pretrained(folder)
    kwargs = dict(height=64, width=64, num_inference_steps=2, seed=1, output_type="latent")
    with pytest.raises(ConfigError) as info:
        pipe("a cat", **kwargs)
    assert str(info.value) == f"{path}: {problem}" + (f"; pass sampler={hint} (CLI: --sampler) to sample with one "
                                                      "of studio's samplers instead" if hint else "")
    published = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    for sampler in samplers:
        np.testing.assert_array_equal(pipe("a cat", sampler=sampler, **kwargs).images,
                                      published("a cat", sampler=sampler, **kwargs).images)


@pytest.mark.parametrize("class_name,config,sampler", [
    ("EulerDiscreteScheduler", SCHEDULER, "euler"),
    ("DPMSolverMultistepScheduler", {k: v for k, v in SCHEDULER.items() if k != "_class_name"}, "dpm++"),
    ("DDIMScheduler", UNIPC, "ddim"),  # the keys only UniPC takes are ignored
])
def test_the_scheduler_is_the_class_model_index_json_names(tiny_dir, tmp_path, class_name, config, sampler):
    """As diffusers: the class model_index.json names, built from scheduler_config.json whatever its _class_name
    (or none), as `Class.from_config` builds it: the reference's latents."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    folder = shutil.copytree(tiny_dir, tmp_path / "copy")
    (folder / CONFIGS["scheduler"]).write_text(json.dumps(config))
    edit(folder, "model_index.json", scheduler=["diffusers", class_name])
    ref = diffusers.PixArtSigmaPipeline.from_pretrained(folder)
    ref.set_progress_bar_config(disable=True)
    pipe = PixArtSigmaPipeline.from_pretrained(folder)
    assert type(ref.scheduler).__name__ == class_name and pipe.sampler.sampler == sampler
    latents = np.random.default_rng(2).standard_normal((1, 4, 32, 32)).astype(np.float32)
    kwargs = dict(height=256, width=256, num_inference_steps=3, output_type="latent")
    expected = ref("a cat", latents=torch.from_numpy(latents), clean_caption=False, **kwargs).images.numpy()
    actual = pipe("a cat", latents=latents, **kwargs).images
    assert rel_l2(actual, expected) <= 1e-3


def test_a_scheduler_class_studio_cant_run_named_by_model_index_json_is_said_so(tiny_dir, tmp_path):
    folder = shutil.copytree(tiny_dir, tmp_path / "copy")
    edit(folder, "model_index.json", scheduler=["diffusers", "UniPCMultistepScheduler"])
    with pytest.raises(ConfigError) as info:
        PixArtSigmaPipeline.from_pretrained(folder)("a cat", height=64, width=64, num_inference_steps=2, seed=1)
    assert str(info.value) == (f"{folder / CONFIGS['scheduler']} (read as model_index.json's UniPCMultistepScheduler): "
                               f"_class_name='UniPCMultistepScheduler' is not supported; {ONE_OF}; pass "
                               "sampler='dpm++', 'ddim' or 'euler' (CLI: --sampler) to sample with one of studio's "
                               "samplers instead")


def test_a_setting_the_calls_sampler_takes_from_an_unrunnable_file_is_still_refused(tiny_dir, tmp_path):
    folder = shutil.copytree(tiny_dir, tmp_path / "copy")
    path = folder / CONFIGS["scheduler"]
    path.write_text(json.dumps({**SCHEDULER, "algorithm_type": "sde-dpmsolver++"}))
    with pytest.raises(ConfigError, match=f"^{path}: algorithm_type='sde-dpmsolver\\+\\+' is not supported; only "
                                          "'dpmsolver\\+\\+' \\(sampler='dpm\\+\\+' takes it from this file\\)$"):
        PixArtSigmaPipeline.from_pretrained(folder)("a cat", height=64, width=64, num_inference_steps=2, seed=1,
                                                    output_type="latent", sampler="dpm++")


def test_the_scheduler_is_read_before_any_weight(broken):
    """An unreadable scheduler_config.json fails the load at once, not after the transformer's weights."""
    (broken / CONFIGS["scheduler"]).write_text("{")
    assert "scheduler_config.json: not valid JSON" in load_error(broken)


def test_loading_reports_the_bytes_read(tiny_dir):
    """progress(done, total) from 0 to the transformer's and VAE's weight files' size, never going back."""
    calls = []
    PixArtSigmaPipeline.from_pretrained(tiny_dir, progress=lambda done, total: calls.append((done, total)))
    total = sum(f.stat().st_size for c in ("transformer", "vae") for f in (tiny_dir / c).glob("*.safetensors"))
    assert calls[0] == (0, total) and calls[-1] == (total, total) and len(calls) > 10
    assert all(t == total for _, t in calls) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-2][0] > 0.9 * total  # the tensors are the files, less their headers (5% of tiny files)


TINY_CALL = dict(height=64, width=64, num_inference_steps=1, output_type="latent", seed=3)


def test_a_model_named_by_a_relative_folder_is_read_from_there_after_the_working_folder_changes(
        tiny_dir, tmp_path, monkeypatch):
    """The text encoder is read at each prompt (streamed, or loaded whole): from the folder the model was loaded
    from, not from what its relative name names in the working folder of the time (here another model, whose
    text encoder is all zeros)."""
    shutil.copytree(tiny_dir, tmp_path / "a" / "tiny")
    other = shutil.copytree(tiny_dir, tmp_path / "b" / "tiny")
    for weights in map(str, checkpoint.weight_files(other / "text_encoder")):
        save_file({k: v * 0 for k, v in load_file(weights).items()}, weights)
    monkeypatch.chdir(tmp_path / "a")
    pipe = PixArtSigmaPipeline.from_pretrained("tiny")
    expected = pipe("a cat", **TINY_CALL).images
    features = pipe.encode_prompt("a cat", stream=False)[0].asnumpy()
    monkeypatch.chdir(tmp_path / "b")
    np.testing.assert_array_equal(pipe("a cat", **TINY_CALL).images, expected)  # streamed
    np.testing.assert_array_equal(pipe.encode_prompt("a cat", stream=False)[0].asnumpy(), features)
    assert not np.array_equal(PixArtSigmaPipeline.from_pretrained("tiny")("a cat", **TINY_CALL).images, expected)
    assert pipe.model_dir == tmp_path / "a" / "tiny"


LOAD_IN_TWO_THREADS = """
import json, sys, threading
from studio import PixArtSigmaPipeline

start, errors = threading.Barrier(4), []

def load():
    start.wait()
    try:
        PixArtSigmaPipeline.from_pretrained(sys.argv[1])
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")

threads = [threading.Thread(target=load) for _ in range(4)]  # unlocked, 2 threads failed in 3 runs of 5, 4 in 8 of 8
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
from transformers.utils import logging
print(json.dumps({"errors": errors, "verbosity": logging.get_verbosity()}))
"""


def test_threads_loading_at_once_in_a_new_process_all_load(tiny_dir):
    """transformers' lazy import of T5Tokenizer is not thread-safe ("cannot import name 'T5Tokenizer'"), and
    its verbosity, lowered while a tokenizer loads, was left at ERROR by two loads overlapping: loads run one at
    a time. In a new process, so that transformers is imported by the two threads."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    done = subprocess.run([sys.executable, "-c", LOAD_IN_TWO_THREADS, str(tiny_dir)], capture_output=True,
                          text=True, cwd=Path(__file__).parents[1], env={**env, "STUDIO_CPU_NICE": "0"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"errors": [], "verbosity": 30}  # transformers' WARNING


def test_two_threads_downloading_at_once_leave_huggingface_hubs_log_level_as_it_was(tmp_path, monkeypatch):
    """A download quiets huggingface_hub's logger while it runs; two overlapping (the second saving the level
    the first set) left it at ERROR."""
    import logging
    import threading
    import time
    import huggingface_hub
    hub_log = logging.getLogger("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    second_in, downloads, resolved = threading.Event(), [], []

    def download(name, revision=None, local_files_only=False, allow_patterns=None, cache_dir=None):
        if local_files_only:  # the cache lookup: not cached
            raise FileNotFoundError(name)
        downloads.append(hub_log.level)
        if len(downloads) == 1:
            second_in.wait(1)  # the second download starts while this one runs, unless it waits for it
        else:
            second_in.set()
            time.sleep(0.3)  # ends after the first
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    (tmp_path / "model_index.json").write_text("{}")  # a pipeline's snapshot
    threads = [threading.Thread(target=lambda: resolved.append(checkpoint.resolve_model_dir("someone/model",
                                                                                             weights=False)))
               for _ in range(2)]
    level = hub_log.level
    hub_log.setLevel(logging.WARNING)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert resolved == [tmp_path, tmp_path] and downloads == [logging.ERROR, logging.ERROR]
        assert hub_log.level == logging.WARNING
    finally:
        hub_log.setLevel(level)


# ---------------------------------------------------------------------------------------------------------
# Transformer-only models (the published 512 and 2K checkpoints hold transformer/ alone), completed with a base


@pytest.fixture
def split_tiny(tiny_dir, tmp_path, monkeypatch):
    """The tiny pipeline split in two: a transformer-only model (its transformer/ alone) and the rest, which
    $STUDIO_BASE_PIPELINE names; composed pipelines go under a temporary $STUDIO_CACHE."""
    only = tmp_path / "only"
    shutil.copytree(tiny_dir / "transformer", only / "transformer")
    base = shutil.copytree(tiny_dir, tmp_path / "base", ignore=lambda d, names: ["transformer"] if d == str(tiny_dir)
                           else [])
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(base))
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    return only, base


def from_base_note(model) -> str:
    return (f"studio: {model} holds a transformer only; the rest of the pipeline (text encoder, tokenizer, VAE, "
            f"scheduler) comes from {model.parent / 'base'} ($STUDIO_BASE_PIPELINE)")


def test_a_transformer_only_model_loads_with_the_base_and_generates_as_the_whole(tiny_dir, split_tiny):
    only, base = split_tiny
    with pytest.warns(UserWarning) as record:
        pipe = PixArtSigmaPipeline.from_pretrained(only)
    assert [str(w.message) for w in record] == [from_base_note(only)]
    folder = pipe.model_dir
    assert folder.parent == only.parent / "cache" / "composed"
    assert (folder / "transformer" / "config.json").resolve() == only / "transformer" / "config.json"
    assert (folder / "vae" / "config.json").resolve() == base / "vae" / "config.json"
    expected = PixArtSigmaPipeline.from_pretrained(tiny_dir)("a cat", **TINY_CALL).images
    np.testing.assert_array_equal(pipe("a cat", **TINY_CALL).images, expected)
    assert folder.name.startswith("only-") and json.loads((folder / "model_index.json").read_text())[
        "transformer"] == ["diffusers", "Transformer2DModel"]  # as the base names it
    # the same contents: the same folder, reused; and the warning said once per process
    assert checkpoint.resolve_model_dir(only) == folder


@pytest.mark.parametrize("others", [("vae", "text_encoder", "tokenizer", "scheduler"), ("vae",), ("scheduler",)])
def test_a_pipeline_folder_without_model_index_json_is_refused_not_completed_with_the_base(tiny_dir, split_tiny,
                                                                                         tmp_path, others):
    """transformer/ beside any other component's folder is a pipeline that lost its model_index.json, not a
    transformer-only model: its own VAE and text encoder were silently replaced by the base's (warned as 'holds a
    transformer only'). Refused, as diffusers refuses it, naming the folders it holds."""
    folder = tmp_path / "pipeline"
    for component in ("transformer", *others):
        shutil.copytree(tiny_dir / component, folder / component)
    message = load_error(folder)  # no warning: any fails the test
    found = ", ".join(f"{c}/" for c in checkpoint.PIPELINE_FOLDERS if c in ("transformer", *others))
    assert message == (f"{folder}: no model_index.json; expected a pipeline folder in the diffusers layout (it holds "
                       f"{found}; a transformer-only model holds transformer/ alone)")
    assert not (tmp_path / "cache").exists()  # nothing composed


def test_transformer_keyword_replaces_the_pipelines_transformer(tiny_dir, split_tiny, tmp_path):
    """diffusers' from_pretrained(base, transformer=...): a model's folder, or the transformer folder itself."""
    only, base = split_tiny
    other = shutil.copytree(tiny_dir, tmp_path / "other")  # a whole pipeline with another transformer
    weights = str(other / "transformer" / "diffusion_pytorch_model.safetensors")
    save_file({k: v * 0 for k, v in load_file(weights).items()}, weights)
    expected = PixArtSigmaPipeline.from_pretrained(tiny_dir)("a cat", **TINY_CALL).images
    for transformer, folder in [(only, only), (only / "transformer", only), (str(tiny_dir), tiny_dir)]:
        pipe = PixArtSigmaPipeline.from_pretrained(other, transformer=transformer)
        np.testing.assert_array_equal(pipe("a cat", **TINY_CALL).images, expected)
        assert (pipe.model_dir / "transformer" / "config.json").resolve() == folder / "transformer" / "config.json"
        assert (pipe.model_dir / "vae" / "config.json").resolve() == other / "vae" / "config.json"
    with pytest.raises(InputError) as info:
        PixArtSigmaPipeline.from_pretrained(base, transformer=object())
    assert str(info.value) == ("transformer=object(...): studio loads the transformer itself; pass the folder or hub "
                               "id it was loaded from (e.g. transformer=\"PixArt-alpha/PixArt-Sigma-XL-2-2K-MS\")")


def test_a_transformer_only_model_without_its_base_says_how_to_give_it(split_tiny, monkeypatch):
    only, base = split_tiny
    shutil.rmtree(base)
    message = load_error(only)
    assert message == (f"{only}: holds a transformer only (transformer/, no model_index.json), and the base pipeline "
                       f"that completes it, {base} ($STUDIO_BASE_PIPELINE), is not usable ({base}: no such model "
                       "folder (and not a hub id like 'owner/name')); set $STUDIO_BASE_PIPELINE to the folder of a "
                       "pipeline, or download PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers")
    monkeypatch.delenv("STUDIO_BASE_PIPELINE")
    monkeypatch.setenv("HF_HUB_CACHE", str(base.parent / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_error(only) == (
        f"{only}: holds a transformer only (transformer/, no model_index.json), and the base pipeline that completes "
        "it, PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers, is not usable (PixArt-alpha/pixart_sigma_sdxlvae_T5_"
        "diffusers: not a local folder, not in the Hugging Face cache, and could not be downloaded (ConnectionError: "
        "HF_HUB_OFFLINE is set); pass the folder of a downloaded copy); set $STUDIO_BASE_PIPELINE to the folder of "
        "a pipeline, or download PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers")
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(only))  # a base that is no whole pipeline either
    assert load_error(only).endswith(f"is not usable ({only}: holds a transformer only too); set "
                                     "$STUDIO_BASE_PIPELINE to the folder of a pipeline, or download "
                                     "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers")
