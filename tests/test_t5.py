"""T5 encoder and tokenizer side vs transformers / diffusers, on tiny random weights and a tiny tokenizer."""

import json
import re
import shutil

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers
from diffusers import PixArtSigmaPipeline
from safetensors.torch import save_file
from transformers.models.t5.modeling_t5 import T5Attention as RefT5Attention

from studio.errors import ConfigError
from studio.models.t5 import StreamedT5Encoder, T5Config, T5EncoderModel, relative_position_buckets
from studio.text import load_tokenizer, preprocess, tokenize, truncated_text
from studio.tiny_tokenizer import VOCAB_SIZE, write_tiny_tokenizer
from tests.util import rel_l2

TOL = 1e-4
TINY = dict(vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2)
PROMPTS = ["  A Red Cat in the RAIN, oil painting.  ", "a tiny robot"]


def _random_reference(seed: int, **overrides) -> transformers.T5EncoderModel:
    """A tiny transformers T5 encoder with random weights, norm scales included."""
    torch.manual_seed(seed)
    model = transformers.T5EncoderModel(transformers.T5Config(**{**TINY, "feed_forward_proj": "gated-gelu",
                                                                 **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn_like(p))
    return model.eval()


def _reference_output(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    return out.last_hidden_state.numpy()


def _ours(model: T5EncoderModel, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return model(ms.Tensor(ids, ms.int32), ms.Tensor(mask, ms.int32)).asnumpy()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny tokenizer folder and a tiny gated-gelu text encoder saved in several shards."""
    root = tmp_path_factory.mktemp("t5")
    write_tiny_tokenizer(root / "tokenizer")
    _random_reference(0).save_pretrained(root / "text_encoder", max_shard_size="8KB")
    return root


@pytest.fixture(scope="module")
def tokenizer(folders):
    return load_tokenizer(folders / "tokenizer")


def _batch(tokenizer, max_length=300):
    """Two prompts of different lengths, preprocessed and padded as the pipeline does."""
    return tokenize(tokenizer, [preprocess(p) for p in PROMPTS], max_length)


# --- encoder ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length,buckets,distance", [(300, 32, 128), (600, 32, 128), (64, 8, 20)])
def test_relative_position_buckets_match_reference(length, buckets, distance):
    pos = torch.arange(length)
    ref = RefT5Attention._relative_position_bucket(pos[None, :] - pos[:, None], True, buckets, distance)
    np.testing.assert_array_equal(relative_position_buckets(length, buckets, distance), ref.numpy())


def test_config_reads_saved_config_json(folders):
    d = json.loads((folders / "text_encoder" / "config.json").read_text())
    config = T5Config.from_dict(d)
    assert (config.d_model, config.d_kv, config.num_heads, config.num_layers) == (32, 8, 4, 2)
    assert (config.dense_act_fn, config.is_gated_act) == ("gelu_new", True)
    with pytest.raises(ConfigError, match="unknown key 'rotary_dim'"):
        T5Config.from_dict({**d, "rotary_dim": 4})
    with pytest.raises(ConfigError, match="dense_act_fn 'relu' contradicts"):
        T5Config.from_dict({**d, "dense_act_fn": "relu"})
    with pytest.raises(ConfigError, match="feed_forward_proj 'gated-silu'"):
        T5Config.from_dict({**d, "feed_forward_proj": "gated-silu", "dense_act_fn": "silu"})
    # the dataclass's own checks name the file `where` says, as the keys' do
    path = folders / "text_encoder" / "config.json"
    with pytest.raises(ConfigError) as info:
        T5Config.from_dict({**d, "layer_norm_epsilon": 0}, path)
    assert str(info.value) == f"{path}: layer_norm_epsilon=0 must be > 0"
    with pytest.raises(ConfigError, match="^T5 config: is_decoder is true; "):
        T5Config(is_decoder=True)


# keys every transformers config takes, which older transformers wrote into config.json; none changes the encoder
COMMON_KEYS = {"return_dict": False, "output_hidden_states": True, "output_attentions": True, "torchscript": True,
               "id2label": {"0": "NO", "1": "YES"}, "label2id": {"NO": 0, "YES": 1}, "tokenizer_class": "T5Tokenizer",
               "chunk_size_feed_forward": 0, "prefix": "summarize: ", "max_length": 20, "num_beams": 4,
               "do_sample": True, "temperature": 0.7, "top_p": 0.9, "bad_words_ids": None, "pruned_heads": {},
               "use_bfloat16": False, "add_cross_attention": False, "tie_encoder_decoder": False}


def test_keys_every_transformers_config_takes_load_the_same_encoder(folders, tokenizer, tmp_path):
    copy = shutil.copytree(folders / "text_encoder", tmp_path / "text_encoder")
    d = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**d, **COMMON_KEYS}))
    assert T5Config.from_dict({**d, **COMMON_KEYS}) == T5Config.from_dict(d)
    ids, mask = _batch(tokenizer)
    np.testing.assert_array_equal(_ours(T5EncoderModel.from_pretrained(copy), ids, mask),
                                  _ours(T5EncoderModel.from_pretrained(folders / "text_encoder"), ids, mask))


def test_a_pruned_model_is_refused(folders):
    path = folders / "text_encoder" / "config.json"
    d = json.loads(path.read_text())
    with pytest.raises(ConfigError) as info:
        T5Config.from_dict({**d, "pruned_heads": {"0": [1, 2]}}, path)
    assert str(info.value) == (f'{path}: pruned_heads is {{"0": [1, 2]}}: studio\'s T5 encoder runs every attention '
                               "head; a model with pruned heads is not supported")


def test_parameter_names_equal_checkpoint_keys(folders):
    index = json.loads((folders / "text_encoder" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    model = T5EncoderModel(T5Config(**TINY))
    assert {name for name, _ in model.parameters_and_names()} == set(index["weight_map"])


def test_encoder_matches_reference_everywhere(folders, tokenizer):
    """Sharded checkpoint, batch of two with different padding, 300 positions: equal at real and padded ones."""
    ids, mask = _batch(tokenizer)
    assert mask.sum(1).tolist()[0] > mask.sum(1).tolist()[1] > 1
    ref = _reference_output(transformers.T5EncoderModel.from_pretrained(folders / "text_encoder"), ids, mask)
    ours = _ours(T5EncoderModel.from_pretrained(folders / "text_encoder"), ids, mask)
    assert np.isfinite(ours).all()
    for b in range(2):
        n = int(mask[b].sum())
        assert rel_l2(ours[b, :n], ref[b, :n]) <= TOL
        assert rel_l2(ours[b, n:], ref[b, n:]) <= TOL
    assert rel_l2(ours, ref) <= TOL


def test_streamed_encoder_equals_the_whole_one(folders, tokenizer):
    """Block by block from the shards (8 KB each here), the same features as the model loaded whole, bit for
    bit; and the same keys are checked."""
    ids, mask = _batch(tokenizer)
    whole = _ours(T5EncoderModel.from_pretrained(folders / "text_encoder"), ids, mask)
    streamed = StreamedT5Encoder(folders / "text_encoder")
    assert len(streamed.files) > 3
    np.testing.assert_array_equal(_ours(streamed, ids, mask), whole)


@pytest.mark.parametrize("edit,expected", [
    (lambda t: t.update({"encoder.block.0.layer.0.SelfAttention.x.weight": torch.zeros(2)}),
     "unexpected key 'encoder.block.0.layer.0.SelfAttention.x.weight'"),
    (lambda t: t.update({"encoder.block.7.layer.1.layer_norm.weight": torch.zeros(2)}),
     "unexpected key 'encoder.block.7.layer.1.layer_norm.weight'"),
    (lambda t: t.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight"),
     "missing key 'encoder.block.1.layer.1.DenseReluDense.wo.weight'"),
    (lambda t: t.pop("shared.weight"), "missing key 'shared.weight'"),
    (lambda t: t.update({"encoder.block.1.layer.0.SelfAttention.q.weight": torch.zeros(3, 32)}),
     "key 'encoder.block.1.layer.0.SelfAttention.q.weight' has shape [3, 32], the model expects [32, 32]"),
])
def test_streamed_encoder_is_strict(tmp_path, tokenizer, edit, expected):
    from studio.errors import CheckpointError
    reference = _random_reference(3)
    reference.config.to_json_file(tmp_path / "config.json")
    tensors = {k: v.clone() for k, v in reference.state_dict().items() if k != "encoder.embed_tokens.weight"}
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors")
    ids, mask = _batch(tokenizer, max_length=20)
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        _ours(StreamedT5Encoder(tmp_path), ids, mask)


def test_relu_checkpoint_with_tied_embedding_key(tmp_path, tokenizer):
    """Original-T5 feed-forward; one file holding `shared.weight` and `encoder.embed_tokens.weight`."""
    reference = _random_reference(1, feed_forward_proj="relu")
    reference.config.to_json_file(tmp_path / "config.json")
    tensors = {k: v.contiguous() for k, v in reference.state_dict().items()}
    tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"].clone()
    save_file(tensors, tmp_path / "model.safetensors")
    ids, mask = _batch(tokenizer, max_length=40)
    ours = _ours(T5EncoderModel.from_pretrained(tmp_path), ids, mask)
    assert rel_l2(ours, _reference_output(reference, ids, mask)) <= TOL


@pytest.mark.parametrize("first,second", [("shared.weight", "encoder.embed_tokens.weight"),
                                          ("encoder.embed_tokens.weight", "shared.weight")])
def test_both_embedding_keys_differing_load_embed_tokens_as_transformers(tmp_path, tokenizer, first, second):
    """transformers unties the two names when their tables differ, and its encoder reads
    `encoder.embed_tokens.weight`: so do the whole and the streamed encoders, whichever shard holds which."""
    reference = _random_reference(4)
    reference.config.to_json_file(tmp_path / "config.json")
    tensors = {k: v.clone() for k, v in reference.state_dict().items()}
    tensors["encoder.embed_tokens.weight"] = torch.randn_like(tensors["shared.weight"])
    rest = sorted(k for k in tensors if k not in (first, second))
    shards = {"model-00001-of-00002.safetensors": [first, *rest[:5]],
              "model-00002-of-00002.safetensors": [second, *rest[5:]]}
    for name, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, tmp_path / name)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, keys in shards.items() for k in keys}}))
    ids, mask = _batch(tokenizer, max_length=40)
    expected = _reference_output(transformers.T5EncoderModel.from_pretrained(tmp_path), ids, mask)
    with torch.no_grad():
        reference.encoder.embed_tokens.weight.copy_(tensors["encoder.embed_tokens.weight"])
    np.testing.assert_array_equal(expected, _reference_output(reference, ids, mask))
    whole = _ours(T5EncoderModel.from_pretrained(tmp_path), ids, mask)
    assert rel_l2(whole, expected) <= TOL
    np.testing.assert_array_equal(_ours(StreamedT5Encoder(tmp_path), ids, mask), whole)


def test_fp16_variant_loads_into_fp32(tmp_path, tokenizer):
    _random_reference(2).half().save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "model.fp16.safetensors").is_file()
    reference = transformers.T5EncoderModel.from_pretrained(tmp_path, variant="fp16", dtype=torch.float32)
    ids, mask = _batch(tokenizer, max_length=40)
    ours = _ours(T5EncoderModel.from_pretrained(tmp_path, variant="fp16"), ids, mask)
    assert rel_l2(ours, _reference_output(reference, ids, mask)) <= TOL


def test_text_side_matches_pipeline_encode_prompt(folders, tokenizer):
    """preprocess + tokenize + encoder == PixArtSigmaPipeline.encode_prompt, prompt and negative prompt."""
    reference = transformers.T5EncoderModel.from_pretrained(folders / "text_encoder")
    pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=reference, vae=None, transformer=None,
                               scheduler=None)
    with torch.no_grad():
        embeds, mask_ref, neg_embeds, neg_mask_ref = pipe.encode_prompt(PROMPTS, negative_prompt="", device="cpu")
    model = T5EncoderModel.from_pretrained(folders / "text_encoder")
    ids, mask = _batch(tokenizer)
    neg_ids, neg_mask = tokenize(tokenizer, [preprocess("")] * 2)
    np.testing.assert_array_equal(mask, mask_ref.numpy())
    np.testing.assert_array_equal(neg_mask, neg_mask_ref.numpy())
    assert rel_l2(_ours(model, ids, mask), embeds.numpy()) <= TOL
    assert rel_l2(_ours(model, neg_ids, neg_mask), neg_embeds.numpy()) <= TOL


# --- tokenizer ---------------------------------------------------------------------------------------


def test_tiny_tokenizer_is_deterministic(tmp_path, folders):
    write_tiny_tokenizer(tmp_path)
    names = sorted(p.name for p in (folders / "tokenizer").iterdir())
    assert names == ["special_tokens_map.json", "spiece.model", "tokenizer_config.json"]
    for name in names:
        assert (tmp_path / name).read_bytes() == (folders / "tokenizer" / name).read_bytes(), name


def test_tiny_tokenizer_has_t5_layout(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE
    assert [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id] == [0, 1, 2]
    assert tokenizer.bos_token_id is None
    assert tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [VOCAB_SIZE - 1, VOCAB_SIZE - 100]


def test_tokenizer_json_loads_the_same(tmp_path, folders, tokenizer):
    """The published folder plus a tokenizer.json (written by the fast tokenizer) tokenizes identically."""
    tokenizer.save_pretrained(tmp_path / "saved")
    with_json = tmp_path / "with_json"
    shutil.copytree(folders / "tokenizer", with_json)
    shutil.copy(tmp_path / "saved" / "tokenizer.json", with_json / "tokenizer.json")
    prompts = [preprocess(p) for p in PROMPTS] + ["émoji 😀 <extra_id_3> zebra!", ""]
    for folder in (with_json, tmp_path / "saved"):
        other = load_tokenizer(folder)
        for a, b in zip(tokenize(other, prompts, 32), tokenize(tokenizer, prompts, 32)):
            np.testing.assert_array_equal(a, b)


def test_tokenize_calls_the_tokenizer_like_the_pipeline(tokenizer):
    long_prompt = " ".join(["a misty mountain at sunset, watercolor"] * 20)
    prompts = [preprocess(p) for p in PROMPTS + [long_prompt, ""]]
    for max_length in (300, 16):
        ids, mask = tokenize(tokenizer, prompts, max_length)
        ref = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                        add_special_tokens=True, return_tensors="pt")
        assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == (4, max_length)
        np.testing.assert_array_equal(ids, ref.input_ids.numpy())
        np.testing.assert_array_equal(mask, ref.attention_mask.numpy())
        assert ids[3, 0] == tokenizer.eos_token_id and mask[3].sum() == 1
    assert ids[2, -1] == tokenizer.eos_token_id and mask[2].all()
    assert truncated_text(tokenizer, prompts[0], 16) == ""
    untruncated = tokenizer([prompts[2]], padding="longest", return_tensors="pt").input_ids
    assert truncated_text(tokenizer, prompts[2], 16) == tokenizer.batch_decode(untruncated[:, 15:-1])[0] != ""


def test_preprocess_matches_pipeline():
    texts = ["  A Red CAT\n", "\tÄrger ÜBER Straße ", "already clean", "", "  Mixed Case   Inside  "]
    assert [preprocess(t) for t in texts] == PixArtSigmaPipeline._text_preprocessing(None, texts, clean_caption=False)
