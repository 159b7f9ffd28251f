"""The T5 v1.1 encoder (Raffel et al. 2020; v1.1 has a gated-GELU feed-forward), PixArt-Sigma's text
encoder.

Takes token ids (B, L) and a padding mask (B, L); gives the last hidden state (B, L, d_model), the
function of transformers' `T5EncoderModel(...).last_hidden_state`. Parameter names equal the keys that
`T5EncoderModel.save_pretrained` writes (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`,
...), so loading is a strict copy.

Each block is pre-norm: x += SelfAttention(RMSNorm(x)); x += FF(RMSNorm(x)). Attention has no
1/sqrt(d) scaling and adds a learned bias per (head, relative-position bucket), computed once in the
first block and shared by all blocks.
"""

import functools
import json
import math
from dataclasses import InitVar, dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from studio import backend
from studio.checkpoint import (SafetensorsFile, check_weights, config_kwargs, load_component, load_weights,
                               read_json, weight_files)
from studio.errors import ConfigError, InputError
from studio.models.attention import attention, fold_mask
from studio.models.layers import Embedding, Linear, param

# feed_forward_proj -> (dense_act_fn, is_gated_act), as transformers derives them
_FEED_FORWARD = {"gated-gelu": ("gelu_new", True), "relu": ("relu", False)}
_ACTIVATIONS = {"gelu_new": backend.gelu_tanh, "relu": ops.relu}

# config.json keys of T5 that do not change the encoder's function (decoder, training, generation, bookkeeping)
_IGNORED_KEYS = frozenset({
    "architectures", "bos_token_id", "classifier_dropout", "decoder_start_token_id", "dropout_rate", "dtype",
    "eos_token_id", "gradient_checkpointing", "initializer_factor", "is_encoder_decoder", "n_positions",
    "num_decoder_layers", "output_past", "pad_token_id", "scale_decoder_outputs", "task_specific_params",
    "tie_word_embeddings", "torch_dtype", "transformers_version", "use_cache",
    # those every transformers config takes (PretrainedConfig.__init__): outputs, fine-tuning, tokenizer, the
    # decoder side, TensorFlow; and pruned_heads, empty (`from_dict` refuses a pruned model)
    "add_cross_attention", "chunk_size_feed_forward", "cross_attention_hidden_size", "finetuning_task", "id2label",
    "label2id", "num_labels", "output_attentions", "output_hidden_states", "prefix", "problem_type", "pruned_heads",
    "return_dict", "sep_token_id", "tf_legacy_loss", "tie_encoder_decoder", "tokenizer_class", "torchscript",
    "use_bfloat16",
    # generation settings, which older transformers saved in config.json (GenerationConfig's now)
    "assistant_confidence_threshold", "assistant_lookbehind", "bad_words_ids", "begin_suppress_tokens",
    "diversity_penalty", "do_sample", "early_stopping", "encoder_no_repeat_ngram_size", "encoder_repetition_penalty",
    "epsilon_cutoff", "eta_cutoff", "exponential_decay_length_penalty", "forced_bos_token_id", "forced_eos_token_id",
    "length_penalty", "max_length", "min_length", "no_repeat_ngram_size", "num_assistant_tokens",
    "num_assistant_tokens_schedule", "num_beam_groups", "num_beams", "num_return_sequences", "output_scores",
    "remove_invalid_values", "repetition_penalty", "return_dict_in_generate", "suppress_tokens", "target_lookbehind",
    "temperature", "top_k", "top_p", "typical_p",
})


@dataclass(frozen=True)
class T5Config:
    """The encoder's hyper-parameters; field names equal transformers' T5 config.json keys.

    Defaults are those of T5 v1.1 XXL (PixArt-Sigma's text encoder). `dense_act_fn` and `is_gated_act`
    follow from `feed_forward_proj`; when config.json states them they must agree.
    """

    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    dense_act_fn: str | None = None
    is_gated_act: bool | None = None
    is_decoder: bool = False
    model_type: str = "t5"
    where: InitVar[str | Path] = "T5 config"  # what its errors name: the file `from_dict` reads

    def __post_init__(self, where: str | Path):
        if self.feed_forward_proj not in _FEED_FORWARD:
            raise ConfigError(f"{where}: feed_forward_proj '{self.feed_forward_proj}' is not supported "
                              f"(allowed: {', '.join(_FEED_FORWARD)})")
        act, gated = _FEED_FORWARD[self.feed_forward_proj]
        for key, derived in (("dense_act_fn", act), ("is_gated_act", gated)):
            stated = getattr(self, key)
            if stated is None:
                object.__setattr__(self, key, derived)
            elif stated != derived:
                raise ConfigError(f"{where}: {key} {stated!r} contradicts feed_forward_proj "
                                  f"'{self.feed_forward_proj}' (which means {key} {derived!r})")
        if self.is_decoder:
            raise ConfigError(f"{where}: is_decoder is true; the text encoder needs an encoder config")
        if self.model_type != "t5":
            raise ConfigError(f"{where}: model_type '{self.model_type}' is not 't5'")
        if not self.layer_norm_epsilon > 0:
            raise ConfigError(f"{where}: layer_norm_epsilon={self.layer_norm_epsilon!r} must be > 0")

    @classmethod
    def from_dict(cls, d: dict, where="T5 config") -> "T5Config":
        """From a config.json dict (`where`, its path, names it in errors): keys starting with '_' and known
        decoder/generation keys are ignored; any other unknown key is a ConfigError, as is a pruned model
        (`pruned_heads` not empty: studio's encoder has every head)."""
        if d.get("pruned_heads"):
            raise ConfigError(f"{where}: pruned_heads is {json.dumps(d['pruned_heads'], default=repr)[:60]}: studio's "
                              "T5 encoder runs every attention head; a model with pruned heads is not supported")
        return cls(**config_kwargs(cls, d, where, _IGNORED_KEYS, writer="transformers"), where=where)


@functools.lru_cache(maxsize=8)
def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets of key - query offsets: (L, L) int32 in [0, num_buckets).

    Half of the buckets for each sign; within a half, offsets below half of it are exact and larger
    ones fall in log-spaced bins up to max_distance (beyond it: the last bin). The logarithm runs in
    float32, like the reference, so bins at the exact powers of two land where the reference puts them.
    """
    pos = np.arange(length, dtype=np.int64)
    offset = pos[None, :] - pos[:, None]  # (L, L): key position - query position
    half = num_buckets // 2
    sign_bucket = (offset > 0).astype(np.int64) * half
    distance = np.abs(offset)
    exact = half // 2
    with np.errstate(divide="ignore"):  # log(0) only where distance < exact, which takes the exact branch
        ratio = np.log(distance.astype(np.float32) / np.float32(exact))
    log_bin = ratio / np.float32(math.log(max_distance / exact)) * np.float32(half - exact)
    large = exact + np.where(distance < exact, 0, log_bin).astype(np.int64)
    large = np.minimum(large, half - 1)
    buckets = sign_bucket + np.where(distance < exact, distance, large)
    return buckets.astype(np.int32)


class T5LayerNorm(nn.Cell):
    """RMSNorm (Zhang & Sennrich 2019): w * x / sqrt(mean(x^2) + eps), the statistic in fp32."""

    def __init__(self, dim: int, eps: float, dtype=ms.float32):
        super().__init__()
        self.eps = eps
        self.weight = param((dim,), dtype)

    def construct(self, x):
        return backend.rms_norm(x, self.weight, self.eps)


class T5Attention(nn.Cell):
    """Multi-head self-attention without score scaling; the first block's also owns the bias table."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, dtype=ms.float32):
        super().__init__()
        self.config = config
        inner = config.num_heads * config.d_kv
        self.q = Linear(config.d_model, inner, bias=False, dtype=dtype)
        self.k = Linear(config.d_model, inner, bias=False, dtype=dtype)
        self.v = Linear(config.d_model, inner, bias=False, dtype=dtype)
        self.o = Linear(inner, config.d_model, bias=False, dtype=dtype)
        if has_relative_attention_bias:
            self.relative_attention_bias = Embedding(config.relative_attention_num_buckets, config.num_heads,
                                                     dtype=dtype)

    def position_bias(self, length: int) -> ms.Tensor:
        """The learned relative-position bias, (1, heads, L, L)."""
        c = self.config
        buckets = relative_position_buckets(length, c.relative_attention_num_buckets,
                                            c.relative_attention_max_distance)
        bias = self.relative_attention_bias(ms.Tensor(buckets))  # (L, L, heads)
        return bias.transpose(2, 0, 1).expand_dims(0)  # (1, heads, L, L)

    def construct(self, x, bias):
        """bias: (B, heads, L, L), the relative position bias with padded keys masked (T5Stack).

        Tokens-first: each projection is one (B*L, d_model) product, heads moved by a transpose. The
        channels-first layout the PixArt transformer uses (no head transposes) would need a product per
        sample here, where the batch is 2 x 300 rows against 4096-wide weights: q 131 vs 121 ms, o 136 vs
        109 ms with the transposes included (benchmarks/backend_ops.py)."""
        b, n, _ = x.shape
        h, d = self.config.num_heads, self.config.d_kv
        q, k, v = (proj(x).reshape(b, n, h, d).transpose(0, 2, 1, 3) for proj in (self.q, self.k, self.v))
        out = attention(q, k, v, bias=bias, scale=1.0)  # (B, heads, L, d_kv)
        return self.o(out.transpose(0, 2, 1, 3).reshape(b, n, h * d))  # (B, L, d_model)


class T5LayerSelfAttention(nn.Cell):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool, dtype=ms.float32):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, dtype=dtype)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon, dtype=dtype)

    def construct(self, x, bias):
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseReluDense(nn.Cell):
    """The feed-forward: wo(act(wi_0 x) * wi_1 x) when gated (v1.1), wo(act(wi x)) otherwise.

    `wo` stays fp32 in every dtype, like the reference (T5's feed-forward output overflows fp16); the
    residual stream then becomes fp32 by promotion, as in the reference.
    """

    def __init__(self, config: T5Config, dtype=ms.float32):
        super().__init__()
        self.gated = config.is_gated_act
        self.act = _ACTIVATIONS[config.dense_act_fn]
        if self.gated:
            self.wi_0 = Linear(config.d_model, config.d_ff, bias=False, dtype=dtype)
            self.wi_1 = Linear(config.d_model, config.d_ff, bias=False, dtype=dtype)
        else:
            self.wi = Linear(config.d_model, config.d_ff, bias=False, dtype=dtype)
        self.wo = Linear(config.d_ff, config.d_model, bias=False, dtype=ms.float32)

    def construct(self, x):
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(h.astype(ms.float32))


class T5LayerFF(nn.Cell):
    def __init__(self, config: T5Config, dtype=ms.float32):
        super().__init__()
        self.DenseReluDense = T5DenseReluDense(config, dtype=dtype)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon, dtype=dtype)

    def construct(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Cell):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool, dtype=ms.float32):
        super().__init__()
        self.layer = nn.CellList([T5LayerSelfAttention(config, has_relative_attention_bias, dtype=dtype),
                                  T5LayerFF(config, dtype=dtype)])

    def construct(self, x, bias):
        return self.layer[1](self.layer[0](x, bias))


class T5Stack(nn.Cell):
    """The encoder blocks and the final norm; the token embedding lives in the model (`shared`)."""

    def __init__(self, config: T5Config, dtype=ms.float32):
        super().__init__()
        self.block = nn.CellList([T5Block(config, i == 0, dtype=dtype) for i in range(config.num_layers)])
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon, dtype=dtype)

    def construct(self, x, mask):
        bias = shared_bias(self.block[0], mask, *x.shape[:2])
        for block in self.block:
            x = block(x, bias)
        return self.final_layer_norm(x)


def shared_bias(first: T5Block, mask: ms.Tensor | None, b: int, n: int) -> ms.Tensor:
    """The first block's relative position bias with padded keys masked, (B, heads, L, L): every block's."""
    attn = first.layer[0].SelfAttention
    return fold_mask(attn.position_bias(n), mask, (b, attn.config.num_heads, n, n))


def key_mask(input_ids: ms.Tensor, attention_mask: ms.Tensor | None) -> ms.Tensor | None:
    """Checks the inputs' shapes; the padding mask as (B, 1, 1, L) bool keys to attend, or None."""
    if input_ids.ndim != 2:
        raise InputError(f"T5 input_ids: expected shape (batch, length), got {tuple(input_ids.shape)}")
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise InputError(f"T5 attention_mask: shape {tuple(attention_mask.shape)} differs from "
                         f"input_ids {tuple(input_ids.shape)}")
    b, n = attention_mask.shape
    return attention_mask.astype(ms.bool_).reshape(b, 1, 1, n)


class T5EncoderModel(nn.Cell):
    """T5 encoder: token ids (B, L) and padding mask (B, L) -> last hidden state (B, L, d_model)."""

    # transformers ties the encoder's embedding to `shared`; checkpoints may store it under both names
    checkpoint_aliases = {"encoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, config: T5Config, dtype=ms.float32):
        super().__init__()
        self.config = config
        self.shared = Embedding(config.vocab_size, config.d_model, dtype=dtype)
        self.encoder = T5Stack(config, dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder, dtype=ms.float32, variant: str | None = None) -> "T5EncoderModel":
        """Build from a `text_encoder/` folder: config.json and (sharded) safetensors, `variant` e.g. 'fp16'."""
        return load_component(cls, T5Config, folder, dtype, variant)

    def construct(self, input_ids: ms.Tensor, attention_mask: ms.Tensor | None = None) -> ms.Tensor:
        """input_ids: int (B, L); attention_mask: (B, L), nonzero/True = real token, 0 = padding.

        Every position gets an output, padded ones too (they attend to the real tokens only).
        """
        mask = key_mask(input_ids, attention_mask)
        x = self.shared(input_ids)  # (B, L, d_model)
        return self.encoder(x, mask)

    def encode_each(self, inputs: list[tuple[ms.Tensor, ms.Tensor | None]]) -> list[ms.Tensor]:
        """Each (ids, mask) encoded on its own (as the streamed encoder does it)."""
        return [self(ids, mask) for ids, mask in inputs]


class StreamedT5Encoder:
    """The T5 encoder run one block at a time from its weight files, for budgets that can't hold it whole.

    Each block's weights are read from the safetensors just before it runs and replaced by the next
    block's, and only the embedding rows of the prompt's tokens are read: the encoder then holds one
    block's weights (T5-XXL: ~0.8 GB in fp32) instead of all of them (19 GB), at the cost of reading the
    files once per call (from the page cache when memory allows). Same ops, same weights: the features
    equal `T5EncoderModel`'s. Every key is checked against the config before anything runs (`check_weights`
    on the headers, as loading the pipeline does); each block loads strictly.
    """

    def __init__(self, folder, dtype=ms.float32, variant: str | None = None):
        folder = Path(folder)
        self.config = T5Config.from_dict(read_json(folder / "config.json"))
        self.dtype = dtype
        self.files = [SafetensorsFile(path) for path in weight_files(folder, variant)]  # headers read once
        # the model's parameters are not allocated until filled: this builds their names and shapes only
        self._embedding = check_weights(T5EncoderModel(self.config), self.files)["shared.weight"]

    def _load(self, cell: nn.Cell, prefix: str) -> nn.Cell:
        load_weights(cell, self.files, prefix)
        return cell

    def __call__(self, input_ids: ms.Tensor, attention_mask: ms.Tensor | None = None) -> ms.Tensor:
        """As `T5EncoderModel`: ids (B, L), mask (B, L) -> last hidden state (B, L, d_model)."""
        return self.encode_each([(input_ids, attention_mask)])[0]

    def encode_each(self, inputs: list[tuple[ms.Tensor, ms.Tensor | None]]) -> list[ms.Tensor]:
        """Each (ids, mask) encoded on its own, every block read once for all of them."""
        c, dtype = self.config, self.dtype
        st, key = self._embedding
        xs, biases = [], []
        first = self._load(T5Block(c, True, dtype), "encoder.block.0.")
        for input_ids, attention_mask in inputs:
            mask = key_mask(input_ids, attention_mask)
            rows = st.rows(key, input_ids.asnumpy())  # (B, L, d_model): only these rows are read
            x = ms.Tensor(rows.astype(np.float32), ms.float32).astype(dtype)
            biases.append(shared_bias(first, mask, *x.shape[:2]))
            xs.append(first(x, biases[-1]))
        del first
        block = T5Block(c, False, dtype)  # refilled block by block: one block's weights alive
        for i in range(1, c.num_layers):
            self._load(block, f"encoder.block.{i}.")
            xs = [block(x, bias) for x, bias in zip(xs, biases)]
        norm = self._load(T5LayerNorm(c.d_model, c.layer_norm_epsilon, dtype), "encoder.final_layer_norm.")
        return [norm(x) for x in xs]
