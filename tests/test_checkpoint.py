"""Bad checkpoints give one-line CheckpointErrors naming the file and the key; loading variants and dtypes."""

import json
import shutil

import mindspore as ms
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from studio.checkpoint import SafetensorsFile, resolve_model_dir, weight_files
from studio.errors import CheckpointError, InputError
from studio.models.transformer import PixArtTransformer2DModel
from studio.pipeline import PixArtSigmaPipeline, as_dtype

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture
def broken(tiny_dir, tmp_path):
    """A fresh copy of the tiny pipeline to break."""
    return shutil.copytree(tiny_dir, tmp_path / "copy")


def load_error(folder) -> str:
    with pytest.raises(CheckpointError) as info:
        PixArtSigmaPipeline.from_pretrained(folder)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_folder(tmp_path):
    assert "no such model folder" in load_error(tmp_path / "nope")


def test_missing_component(broken):
    shutil.rmtree(broken / "vae")
    assert "component 'vae' is missing" in load_error(broken)


def test_missing_weight_file(broken):
    (broken / "transformer" / WEIGHTS).unlink()
    msg = load_error(broken)
    assert "transformer" in msg and "no weight file" in msg


def test_missing_shard(broken):
    (broken / "text_encoder" / "model-00002-of-00002.safetensors").unlink()
    pipe = PixArtSigmaPipeline.from_pretrained(broken)  # the text encoder loads when a prompt is encoded
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002.safetensors: missing shard"):
        pipe.encode_prompt(["a cat"])


def test_missing_key(broken):
    path = broken / "transformer" / WEIGHTS
    tensors = load_file(str(path))
    del tensors["transformer_blocks.1.attn2.to_k.bias"]
    save_file(tensors, str(path))
    msg = load_error(broken)
    assert "missing key 'transformer_blocks.1.attn2.to_k.bias'" in msg and str(path) in msg


def test_unexpected_key(broken):
    path = broken / "transformer" / WEIGHTS
    tensors = load_file(str(path))
    tensors["transformer_blocks.0.attn1.to_x.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(path))
    msg = load_error(broken)
    assert str(path) in msg and "unexpected key 'transformer_blocks.0.attn1.to_x.weight'" in msg


def test_wrong_shape(broken):
    path = broken / "vae" / WEIGHTS
    tensors = load_file(str(path))
    tensors["decoder.conv_in.bias"] = np.zeros((3,), np.float32)
    save_file(tensors, str(path))
    msg = load_error(broken)
    assert "key 'decoder.conv_in.bias' has shape [3]" in msg and str(path) in msg


@pytest.mark.parametrize("keep", [4, 100, -1000])
def test_truncated_file(broken, keep):
    path = broken / "transformer" / WEIGHTS
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep > 0 else data[:keep])
    msg = load_error(broken)
    assert str(path) in msg and "truncated" in msg


def _rewrite_header(path, edit):
    """Rewrite a safetensors file's JSON header through `edit(header)`, keeping its data bytes."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header["decoder.conv_in.bias"])
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


@pytest.mark.parametrize("edit,expected", [
    (lambda e: e.pop("data_offsets"), "key 'decoder.conv_in.bias' needs a dtype, a shape and two data offsets"),
    (lambda e: e.update(shape=[5]), "key 'decoder.conv_in.bias' of shape [5] F32 takes 20 bytes, its data "
                                    "offsets span"),
    (lambda e: e.update(shape="8"), "needs a dtype, a shape and two data offsets"),
    (lambda e: e.update(dtype="F9"), "key 'decoder.conv_in.bias' has unsupported dtype F9"),
])
def test_corrupt_header(broken, edit, expected):
    path = broken / "vae" / WEIGHTS
    _rewrite_header(path, edit)
    msg = load_error(broken)
    assert str(path) in msg and expected in msg


def test_pickle_refused_with_conversion_hint(broken):
    (broken / "transformer" / WEIGHTS).unlink()
    (broken / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04 not unpickled")
    msg = load_error(broken)
    assert "pickle weights are refused" in msg and "safetensors" in msg and "diffusion_pytorch_model.bin" in msg


def test_bad_json(broken):
    (broken / "transformer" / "config.json").write_text("{not json")
    assert "not valid JSON" in load_error(broken)


def test_hub_id_not_in_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="owner/missing-model: not a local folder, not in the Hugging Face "
                                              "cache, and could not be downloaded \\(ConnectionError: HF_HUB_OFFLINE "
                                              "is set\\); pass the folder of a downloaded copy$"):
        resolve_model_dir("owner/missing-model")


def test_hub_id_from_cache(tiny_dir, tmp_path, monkeypatch):
    """A hub id resolves to its snapshot in the Hugging Face cache layout."""
    snapshot = tmp_path / "models--someone--tiny-pixart" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_dir, snapshot)
    (tmp_path / "models--someone--tiny-pixart" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-pixart" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir("someone/tiny-pixart") == snapshot


def test_planning_fetches_configs_only(tiny_dir, tmp_path, monkeypatch):
    """A plan of a hub id not in the cache downloads its JSON configs only; loading then still fetches the
    weights, not mistaking the configs-only snapshot for the pipeline."""
    import huggingface_hub
    snapshot = tmp_path / "snapshot"
    calls = []

    def fake_download(name, local_files_only=False, allow_patterns=(), cache_dir=None):
        calls.append((local_files_only, tuple(allow_patterns)))
        if not local_files_only:  # "download": the files the patterns select
            for src in tiny_dir.rglob("*"):
                if src.is_file() and any(src.match(p) for p in allow_patterns):
                    (snapshot / src.relative_to(tiny_dir)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, snapshot / src.relative_to(tiny_dir))
        if not snapshot.is_dir():
            raise FileNotFoundError(name)
        return str(snapshot)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_model_dir("someone/tiny-pixart", weights=False) == snapshot
    assert calls == [(True, ("*.json",)), (False, ("*.json",))]
    assert not list(snapshot.rglob("*.safetensors"))
    calls.clear()
    assert resolve_model_dir("someone/tiny-pixart") == snapshot  # cached configs only: download the rest
    assert [local for local, _ in calls] == [True, False] and "*.safetensors" in calls[1][1]
    assert (snapshot / "transformer" / WEIGHTS).is_file()


def _rewrite(folder, name, convert):
    """Rewrite the transformer weights under `name` with arrays converted by `convert`."""
    src = folder / "transformer" / WEIGHTS
    tensors = load_file(str(src))
    src.unlink()
    save_file({k: convert(v) for k, v in tensors.items()}, str(folder / "transformer" / name))
    return tensors


def test_fp16_variant_loads_into_fp32(broken):
    original = _rewrite(broken, "diffusion_pytorch_model.fp16.safetensors", lambda a: a.astype(np.float16))
    with pytest.raises(CheckpointError, match="no weight file"):
        weight_files(broken / "transformer")
    model = PixArtTransformer2DModel.from_pretrained(broken / "transformer", variant="fp16")
    got = dict(model.parameters_and_names())["proj_out.weight"].asnumpy()
    np.testing.assert_array_equal(got, original["proj_out.weight"].astype(np.float16).astype(np.float32))


def test_a_component_without_the_variants_files_loads_its_plain_ones(broken):
    """As the reference: variant="fp16" takes the fp16 transformer and the plain VAE and text encoder."""
    original = _rewrite(broken, "diffusion_pytorch_model.fp16.safetensors", lambda a: a.astype(np.float16))
    pipe = PixArtSigmaPipeline.from_pretrained(broken, variant="fp16")
    got = dict(pipe.transformer.parameters_and_names())["proj_out.weight"].asnumpy()
    np.testing.assert_array_equal(got, original["proj_out.weight"].astype(np.float16).astype(np.float32))
    assert weight_files(broken / "vae", "fp16") == [broken / "vae" / WEIGHTS]
    with pytest.raises(CheckpointError, match="no weight file \\(diffusion_pytorch_model.bf16.safetensors"):
        weight_files(broken / "transformer", "bf16")  # neither the variant's files nor plain ones


@pytest.mark.parametrize("name", ["float16", "fp16", "torch.float16", "numpy.float16"])
def test_dtype_given_by_name_or_as_a_torch_or_numpy_dtype(name):
    torch = pytest.importorskip("torch")
    given = {"torch.float16": torch.float16, "numpy.float16": np.float16}.get(name, name)
    assert as_dtype(given) == ms.float16
    with pytest.raises(InputError, match="dtype 'float8' is not one of float32, fp32, float16"):
        as_dtype("float8")


def test_bf16_file_loads(broken):
    """bf16 safetensors (written by torch, numpy has no bf16) are widened exactly."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as load_torch, save_file as save_torch
    src = broken / "transformer" / WEIGHTS
    tensors = load_torch(str(src))
    save_torch({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(src))
    model = PixArtTransformer2DModel.from_pretrained(broken / "transformer", dtype=ms.float16)
    got = dict(model.parameters_and_names())["scale_shift_table"]
    assert got.dtype == ms.float16
    expected = tensors["scale_shift_table"].to(torch.bfloat16).float().numpy().astype(np.float16)
    np.testing.assert_array_equal(got.asnumpy(), expected)


def test_safetensors_reader_reads_what_safetensors_wrote(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int64)}
    save_file(arrays, str(tmp_path / "x.safetensors"))
    st = SafetensorsFile(tmp_path / "x.safetensors")
    assert sorted(st.keys()) == ["a", "b"] and st.shape("a") == (2, 3)
    np.testing.assert_array_equal(st.array("a"), arrays["a"])
    np.testing.assert_array_equal(st.array("b"), arrays["b"])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_safetensors_rows_read_only_what_is_asked(tmp_path, dtype):
    table = np.random.default_rng(0).standard_normal((50, 7)).astype(dtype)
    save_file({"table": table, "other": np.ones(3, np.float32)}, str(tmp_path / "x.safetensors"))
    st = SafetensorsFile(tmp_path / "x.safetensors")
    index = np.array([[3, 49, 3, 0], [7, 7, 12, 1]])
    np.testing.assert_array_equal(st.rows("table", index), table[index])
    assert st.rows("table", np.zeros((0,), np.int64)).shape == (0, 7)
    with pytest.raises(IndexError, match="has 50 rows, asked for row 50"):
        st.rows("table", np.array([50]))


def test_bf16_rows_are_widened(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch
    table = torch.randn(20, 6).to(torch.bfloat16)
    save_torch({"t": table}, str(tmp_path / "x.safetensors"))
    index = np.array([5, 0, 19])
    np.testing.assert_array_equal(SafetensorsFile(tmp_path / "x.safetensors").rows("t", index),
                                  table.float().numpy()[index])


@pytest.mark.parametrize("name,hub", [("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", True), ("owner/name", True),
                                      ("./owner/name", False), ("/abs/path", False), ("~/models", False),
                                      ("a/b/c", False), ("tiny", False), ("a\\b/c", False), ("made/here", False)])
def test_is_hub_id(tmp_path, name, hub):
    from studio.hub import is_hub_id
    (tmp_path / "made" / "here").mkdir(parents=True)  # an existing relative path is a folder, not an id
    assert is_hub_id(name, tmp_path) is hub


def test_torch_dtype_is_the_references_name_for_dtype(tiny_dir):
    torch = pytest.importorskip("torch")
    assert PixArtSigmaPipeline.from_pretrained(tiny_dir, torch_dtype=torch.float16).dtype == ms.float16
    with pytest.raises(InputError, match="pass dtype or torch_dtype"):
        PixArtSigmaPipeline.from_pretrained(tiny_dir, dtype="float16", torch_dtype=torch.float16)
