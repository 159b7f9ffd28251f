"""Bad checkpoints give one-line CheckpointErrors naming the file and the key; loading variants and dtypes."""

import json
import os
import re
import shutil
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from studio.checkpoint import (SafetensorsFile, _hub_unreachable, download_weight_names, load_weights,
                               resolve_model_dir, weight_files)
from studio.errors import CheckpointError, InputError
from studio.models.transformer import PixArtTransformer2DModel
from studio.pipeline import PixArtSigmaPipeline, as_dtype
from tests.util import cache_environment

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
    """Found at load, though the text encoder's weights are read only when a prompt is encoded."""
    (broken / "text_encoder" / "model-00002-of-00002.safetensors").unlink()
    assert load_error(broken) == (f"{broken / 'text_encoder' / 'model-00002-of-00002.safetensors'}: missing shard "
                                  "listed in model.safetensors.index.json")


SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def _first_key(shard) -> str:
    return sorted(load_file(str(shard)))[0]


@pytest.mark.parametrize("keep_in_first", [True, False])
def test_a_shard_holding_a_key_its_index_maps_to_another_shard(broken, keep_in_first):
    """Whether the key is in both shards (the second's copy would win) or moved: one line naming both files."""
    folder = broken / "text_encoder"
    first = load_file(str(folder / SHARD_1))
    key = sorted(first)[0]
    second = load_file(str(folder / SHARD_2))
    second[key] = np.zeros_like(first[key])
    save_file(second, str(folder / SHARD_2))
    if not keep_in_first:
        del first[key]
        save_file(first, str(folder / SHARD_1))
    msg = load_error(broken)
    assert msg == (f"{folder / SHARD_2}: holds key '{key}', which model.safetensors.index.json maps to {SHARD_1}")


def test_a_text_encoder_key_in_a_shard_its_index_does_not_list_is_refused_at_load(broken):
    """A second copy of the embedding, in the other shard and not in the index: the streamed text encoder took the
    first it saw; refused when the pipeline loads, and by the streamed encoder itself."""
    from studio.models.t5 import StreamedT5Encoder

    folder = broken / "text_encoder"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    home = index["weight_map"].pop("shared.weight")
    other = SHARD_2 if home == SHARD_1 else SHARD_1
    tensors = load_file(str(folder / other))
    tensors["shared.weight"] = load_file(str(folder / home))["shared.weight"] * 0
    save_file(tensors, str(folder / other))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    expected = f"{folder / SHARD_2}: key 'shared.weight' is stored twice, here and in {folder / SHARD_1}"
    assert load_error(broken) == expected
    with pytest.raises(CheckpointError) as info:
        StreamedT5Encoder(folder)
    assert str(info.value) == expected


def test_a_key_stored_in_two_files_is_an_error(tiny_dir, tmp_path):
    model = PixArtTransformer2DModel.from_pretrained(tiny_dir / "transformer")
    tensors = load_file(str(tiny_dir / "transformer" / WEIGHTS))
    keys = sorted(tensors)
    save_file({k: tensors[k] for k in keys[:5]}, str(tmp_path / "a.safetensors"))
    save_file({k: tensors[k] * 0 for k in keys[4:]}, str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError) as info:
        load_weights(model, [tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert str(info.value) == (f"{tmp_path / 'b.safetensors'}: key '{keys[4]}' is stored twice, here and in "
                               f"{tmp_path / 'a.safetensors'}")


@pytest.mark.parametrize("dtype,code", [(np.int32, "I32"), (np.bool_, "BOOL"), (np.int64, "I64")])
def test_integer_and_bool_tensors_are_refused(broken, dtype, code):
    path = broken / "vae" / WEIGHTS
    tensors = load_file(str(path))
    tensors["decoder.conv_in.bias"] = tensors["decoder.conv_in.bias"].astype(dtype)
    save_file(tensors, str(path))
    assert load_error(broken) == (f"{path}: key 'decoder.conv_in.bias' has dtype {code}; expected a floating dtype "
                                  "(F32, F16 or BF16; F64 is read too)")


def test_an_integer_embedding_table_is_refused_at_load(broken):
    """The streamed T5 reads only the prompt's rows of the embedding, at the first prompt: its dtype is checked
    when the pipeline loads, from the header."""
    index = json.loads((broken / "text_encoder" / "model.safetensors.index.json").read_text())
    path = broken / "text_encoder" / index["weight_map"]["shared.weight"]
    tensors = load_file(str(path))
    tensors["shared.weight"] = tensors["shared.weight"].astype(np.int32)
    save_file(tensors, str(path))
    assert load_error(broken) == (f"{path}: key 'shared.weight' has dtype I32; expected a floating dtype (F32, F16 "
                                  "or BF16; F64 is read too)")


def test_rows_of_an_integer_table_are_refused(tmp_path):
    save_file({"table": np.arange(12, dtype=np.int64).reshape(4, 3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="key 'table' has dtype I64; expected a floating dtype"):
        SafetensorsFile(tmp_path / "x.safetensors").rows("table", np.array([1]))


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
    edit(header)
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
    _rewrite_header(path, lambda header: edit(header["decoder.conv_in.bias"]))
    msg = load_error(broken)
    assert str(path) in msg and expected in msg


def _raw(path, header, data: bytes = b"") -> Path:
    """A safetensors file of `header` (a dict, or JSON text, where a key may repeat) and `data`."""
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _f32(begin, end, shape=None) -> dict:
    return {"dtype": "F32", "shape": [(end - begin) // 4] if shape is None else shape, "data_offsets": [begin, end]}


FOUR = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes
# safetensors keeps the last 'a' and finds bytes 0-8 nobody's; studio refuses any key given twice
A_TWICE = f'{{"a": {json.dumps(_f32(0, 8))}, "a": {json.dumps(_f32(8, 16))}}}'


@pytest.mark.parametrize("header,data", [
    ({"b": _f32(8, 16), "a": _f32(0, 8)}, FOUR),  # any order in the header
    ({"z": _f32(0, 0, [0, 3]), "y": _f32(0, 0, [0]), "a": _f32(0, 16), "x": _f32(16, 16, [0])}, FOUR),  # zero-size
    ({"__metadata__": {"format": "pt"}, "a": _f32(0, 16)}, FOUR),
    ({"__metadata__": None, "a": _f32(0, 16, [2, 2])}, FOUR),
    ({"s": _f32(0, 4, [])}, FOUR[:4]),
    ({}, b""),
])
def test_safetensors_layouts_that_safetensors_reads_are_read_alike(tmp_path, header, data):
    path = _raw(tmp_path / "x.safetensors", header, data)
    expected = load_file(str(path))
    st = SafetensorsFile(path)
    assert sorted(st.keys()) == sorted(expected)
    for key, value in expected.items():
        assert st.shape(key) == value.shape
        np.testing.assert_array_equal(st.array(key), value)


@pytest.mark.parametrize("header,data,expected", [
    ({"a": _f32(0, 8), "b": _f32(0, 8)}, FOUR[:8],
     "corrupt safetensors header: key 'b' starts at byte 0 of the data, before key 'a' ends (at 8): their bytes "
     "overlap"),
    ({"a": _f32(0, 16), "z": _f32(8, 8, [0])}, FOUR,
     "corrupt safetensors header: key 'z' starts at byte 8 of the data, before key 'a' ends (at 16): their bytes "
     "overlap"),
    ({"a": _f32(0, 8), "b": _f32(12, 20)}, FOUR + FOUR[:4],
     "corrupt safetensors header: key 'b' starts at byte 12 of the data, after a gap: key 'a' ends at 8"),
    ({"a": _f32(4, 12)}, FOUR[:12],
     "corrupt safetensors header: key 'a' starts at byte 4 of the data, after a gap: the data starts at 0"),
    (A_TWICE, FOUR, "corrupt safetensors header (key 'a' is given twice)"),
    ({"__metadata__": {"format": 1}, "a": _f32(0, 16)}, FOUR,
     "corrupt safetensors header: '__metadata__' is {\"format\": 1}; expected an object of strings"),
    ({"__metadata__": ["pt"], "a": _f32(0, 16)}, FOUR,
     "corrupt safetensors header: '__metadata__' is [\"pt\"]; expected an object of strings"),
    ({"a": _f32(0, 8, [2 ** 64])}, FOUR[:8], "corrupt safetensors header: key 'a' of shape [18446744073709551616] "
                                             "F32 takes 73786976294838206464 bytes, its data offsets span 8"),
    ({"a": _f32(0, 0, [2 ** 32, 2 ** 32])}, b"", "corrupt safetensors header: key 'a' of shape [4294967296, "
                                                 "4294967296] F32 takes 73786976294838206464 bytes, its data offsets "
                                                 "span 0"),
    ({"a": _f32(0, 4, [True])}, FOUR[:4], "corrupt safetensors header: key 'a' needs a dtype, a shape and two data "
                                          "offsets"),
])
def test_safetensors_layouts_that_safetensors_refuses_are_refused(tmp_path, header, data, expected):
    """As safetensors checks a file as a whole: in offset order, each tensor's bytes start where the previous one's
    end, from the data's first byte to the file's last; metadata maps strings to strings; sizes don't overflow."""
    path = _raw(tmp_path / "x.safetensors", header, data)
    with pytest.raises(SafetensorError):
        load_file(str(path))
    with pytest.raises(CheckpointError) as info:
        SafetensorsFile(path)
    assert str(info.value) == f"{path}: {expected}"


@pytest.mark.parametrize("header,data,extra", [({"a": _f32(0, 8)}, FOUR, 8), ({}, b"xx", 2)])
def test_bytes_after_the_last_tensor_are_refused(tmp_path, header, data, extra):
    path = _raw(tmp_path / "x.safetensors", header, data)
    with pytest.raises(SafetensorError, match="file not fully covered"):
        load_file(str(path))
    with pytest.raises(CheckpointError) as info:
        SafetensorsFile(path)
    end = path.stat().st_size - extra
    assert str(info.value) == (f"{path}: corrupt safetensors file: {extra} bytes after the last tensor's data (which "
                               f"ends at byte {end})")


def test_tensors_sharing_bytes_are_refused_at_load(broken):
    """Two keys of one shape pointing at the same bytes loaded silently, both with the same values."""
    path = broken / "vae" / WEIGHTS

    def share(header):
        header["decoder.conv_norm_out.weight"]["data_offsets"] = header["decoder.conv_norm_out.bias"]["data_offsets"]
    _rewrite_header(path, share)
    assert load_error(broken) == (f"{path}: corrupt safetensors header: key 'decoder.conv_norm_out.weight' starts at "
                                  "byte 2368 of the data, before key 'decoder.conv_norm_out.bias' ends (at 2400): "
                                  "their bytes overlap")


def test_pickle_refused_with_conversion_hint(broken):
    (broken / "transformer" / WEIGHTS).unlink()
    (broken / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04 not unpickled")
    msg = load_error(broken)
    assert "pickle weights are refused" in msg and "safetensors" in msg and "diffusion_pytorch_model.bin" in msg


def test_bad_json(broken):
    (broken / "transformer" / "config.json").write_text("{not json")
    assert "not valid JSON" in load_error(broken)


def _loop(path):
    path.unlink() if path.is_file() else shutil.rmtree(path)
    os.symlink(path.name, path)


def _folder(path):
    path.unlink()
    path.mkdir()


def _dangling(path):
    path.unlink()
    os.symlink("nowhere", path)


@pytest.mark.parametrize("where,make,expected", [
    ("model_index.json", _folder, "{folder}: no model_index.json (a folder, not a file); expected a pipeline "
                                  "folder in the diffusers layout"),
    ("transformer/config.json", _folder, "{path}: a folder, not a file"),
    ("transformer/config.json", _loop, "{path}: a symbolic link loop, not a file"),
    ("transformer/" + WEIGHTS, _folder, "{path}: a folder, not a file"),
    ("text_encoder/model.safetensors.index.json", _folder, "{path}: a folder, not a file"),
    ("text_encoder/model-00002-of-00002.safetensors", _dangling, "{path}: a broken symbolic link (to nowhere), not a "
                                                                 "file listed in model.safetensors.index.json"),
    ("text_encoder/model-00002-of-00002.safetensors", _loop, "{path}: a symbolic link loop, not a file listed in "
                                                             "model.safetensors.index.json"),
    ("vae", _loop, "{path}: is a symbolic link loop, where the 'vae' component's folder should be"),
])
def test_what_is_there_instead_of_a_file_or_folder_is_said(broken, where, make, expected):
    make(broken / where)
    assert load_error(broken) == expected.format(folder=broken, path=broken / where)


def test_a_model_path_that_is_no_folder_says_what_it_is(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    os.symlink("/nonexistent", tmp_path / "models" / "dangling")
    os.symlink("looping", tmp_path / "models" / "looping")
    shutil.copy(tiny_dir / "model_index.json", tmp_path / "models" / "model_index.json")
    for name, what in [("models/dangling", "a broken symbolic link (to /nonexistent)"),  # not taken for hub ids
                       ("models/looping", "a symbolic link loop"), ("models/model_index.json", "a file")]:
        with pytest.raises(CheckpointError) as info:
            resolve_model_dir(name)
        assert str(info.value) == (f"{name}: is {what}, not a model folder; pass the pipeline folder (the one "
                                   "holding model_index.json) or a hub id like 'owner/name'")


@pytest.mark.parametrize("name,shown", [("ti\x00ny", "ti\\x00ny"), ("owner/ti\nny", "owner/ti\\nny")])
def test_a_model_name_with_a_control_character_is_refused(name, shown):
    """The API and $STUDIO_MODEL reach resolve_model_dir without the CLI's check: NUL made Python's ValueError."""
    with pytest.raises(CheckpointError) as info:
        resolve_model_dir(name)
    assert str(info.value) == f"'{shown}' has a control character, which no path, font or model name may hold"


def offline(monkeypatch, cache) -> None:
    """The Hugging Face cache at `cache`, and no network ($HF_HUB_OFFLINE)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def offline_error(name: str = "someone/tiny-pixart") -> str:
    """The one-line CheckpointError of resolving `name` (offline, as `offline` sets it)."""
    with pytest.raises(CheckpointError) as info:
        resolve_model_dir(name)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_hub_id_not_in_cache(tmp_path, monkeypatch):
    offline(monkeypatch, tmp_path)
    with pytest.raises(CheckpointError, match="owner/missing-model: not a local folder, not in the Hugging Face "
                                              "cache, and could not be downloaded \\(ConnectionError: HF_HUB_OFFLINE "
                                              "is set\\); pass the folder of a downloaded copy$"):
        resolve_model_dir("owner/missing-model")


def test_a_hub_whose_name_does_not_resolve_fails_at_once(tmp_path, monkeypatch):
    """Online, not in the cache, and the hub's host name doesn't resolve (no network): one line at once,
    not huggingface_hub's ~25 s of retries; with a proxy (which resolves names itself) the hub is asked."""
    import socket

    import huggingface_hub
    from studio import checkpoint

    def no_names(host, port, *args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def asked(*args, **kwargs):
        raise OSError("the hub was asked")
    monkeypatch.setattr(checkpoint, "_hub_unreachable", _hub_unreachable)
    monkeypatch.setattr(socket, "getaddrinfo", no_names)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", asked)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in checkpoint.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CheckpointError) as info:
        resolve_model_dir("owner/missing-model")
    assert str(info.value) == ("owner/missing-model: not a local folder, not in the Hugging Face cache, and could "
                               "not be downloaded (ConnectionError: cannot resolve huggingface.co: Name or service "
                               "not known (no network?)); pass the folder of a downloaded copy")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    with pytest.raises(CheckpointError, match=r"\(OSError: the hub was asked\)"):
        resolve_model_dir("owner/missing-model")


def test_hub_id_from_cache(tiny_dir, tmp_path, monkeypatch):
    """A hub id resolves to its snapshot in the Hugging Face cache layout."""
    snapshot = tmp_path / "models--someone--tiny-pixart" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_dir, snapshot)
    (tmp_path / "models--someone--tiny-pixart" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-pixart" / "refs" / "main").write_text("0" * 40)
    offline(monkeypatch, tmp_path)
    assert resolve_model_dir("someone/tiny-pixart") == snapshot


def _hub_cache(tiny_dir, cache, revisions, refs) -> Path:
    """A Hugging Face cache holding the tiny pipeline as snapshots `revisions` of someone/tiny-pixart, `refs`
    {branch: revision}; returns its snapshots folder."""
    root = cache / "models--someone--tiny-pixart"
    for revision in revisions:
        shutil.copytree(tiny_dir, root / "snapshots" / revision)
    for ref, revision in refs.items():
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(revision)
    return root / "snapshots"


def test_hub_revision_cache_dir_and_local_files_only(tiny_dir, tmp_path, monkeypatch):
    """diffusers' names: revision (a branch, tag or commit hash in the cache), cache_dir, local_files_only."""
    import huggingface_hub

    def online(*args, **kwargs):
        raise AssertionError("local_files_only=True went online")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", online)
    main, old = "a" * 40, "b" * 40
    snapshots = _hub_cache(tiny_dir, tmp_path, [main, old], {"main": main, "v1": old})
    for revision, expected in [(None, main), ("main", main), (old, old), ("v1", old)]:
        assert resolve_model_dir("someone/tiny-pixart", revision=revision, cache_dir=tmp_path,
                                 local_files_only=True) == snapshots / expected
    with pytest.raises(CheckpointError) as info:
        resolve_model_dir("someone/tiny-pixart", revision="v2", cache_dir=tmp_path, local_files_only=True)
    assert str(info.value).startswith("someone/tiny-pixart: not a local folder, not in the Hugging Face cache at "
                                      "revision 'v2', and could not be downloaded (local_files_only=True); the "
                                      "cache holds it at revision=")
    pipe = PixArtSigmaPipeline.from_pretrained("someone/tiny-pixart", revision=old, cache_dir=tmp_path,
                                               local_files_only=True)
    assert pipe.model_dir == snapshots / old


def test_a_relative_folder_or_hub_cache_gives_an_absolute_folder_not_resolved(tiny_dir, tmp_path, monkeypatch):
    """The pipeline reads files of its folder after the load (the text encoder, at each prompt), whatever the
    working folder is then; a folder named through a link keeps that name."""
    monkeypatch.chdir(tmp_path)
    os.symlink(tiny_dir, "link")
    assert resolve_model_dir("link") == tmp_path / "link"
    snapshots = _hub_cache(tiny_dir, tmp_path / "cache", ["a" * 40], {"main": "a" * 40})
    assert resolve_model_dir("someone/tiny-pixart", cache_dir="cache", local_files_only=True) == snapshots / ("a" * 40)
    offline(monkeypatch, "cache")
    assert resolve_model_dir("someone/tiny-pixart") == snapshots / ("a" * 40)


def test_a_snapshot_cached_by_hash_alone_loads_at_that_revision(tiny_dir, tmp_path, monkeypatch):
    """No refs/main (a snapshot fetched by commit hash): revision=<hash> finds it, and without it the error
    names the hash."""
    revision = "c" * 40
    snapshots = _hub_cache(tiny_dir, tmp_path, [revision], {})
    offline(monkeypatch, tmp_path)
    assert resolve_model_dir("someone/tiny-pixart", revision=revision) == snapshots / revision
    with pytest.raises(CheckpointError, match=f"HF_HUB_OFFLINE is set\\); the cache holds it at revision='{revision}'; "
                                              "pass the folder"):
        resolve_model_dir("someone/tiny-pixart")


def test_a_hub_id_names_its_revision_after_an_at(tiny_dir, tmp_path, monkeypatch):
    """'owner/name@revision' (what a layout or batch job can write, where there is no revision key): the
    revision that follows, a branch, tag or hash ('refs/pr/1' too); with a different revision= it's an error."""
    from studio.hub import is_hub_id, split_revision

    main, old = "a" * 40, "b" * 40
    snapshots = _hub_cache(tiny_dir, tmp_path, [main, old], {"main": main, "v1": old})
    offline(monkeypatch, tmp_path)
    for written, expected in [("someone/tiny-pixart", main), (f"someone/tiny-pixart@{old}", old),
                              ("someone/tiny-pixart@v1", old), ("someone/tiny-pixart@main", main)]:
        assert resolve_model_dir(written) == snapshots / expected
    assert split_revision("someone/x@refs/pr/1") == ("someone/x", "refs/pr/1")
    assert split_revision("a@b") == ("a@b", None) and split_revision("someone/x@") == ("someone/x@", None)
    assert is_hub_id("someone/x@refs/pr/1") and not is_hub_id("./x@v1")
    with pytest.raises(CheckpointError, match=r"^someone/tiny-pixart@v1: names revision 'v1', and revision='main' "
                                              r"was given too$"):
        resolve_model_dir("someone/tiny-pixart@v1", revision="main")
    assert PixArtSigmaPipeline.from_pretrained("someone/tiny-pixart@v1").model_dir == snapshots / old


def fake_hub(monkeypatch, repo: Path, snapshot: Path) -> list:
    """huggingface_hub standing for a repository of `repo`'s files: snapshot_download copies into `snapshot` what
    its patterns select (a cache lookup copies nothing, and fails while `snapshot` doesn't exist), list_repo_files
    lists `repo`. Returns the calls made: None for a cache lookup, else the sorted patterns."""
    import huggingface_hub
    calls = []

    def download(name, revision=None, local_files_only=False, allow_patterns=None, cache_dir=None):
        calls.append(None if local_files_only else sorted(allow_patterns))
        for src in [] if local_files_only else repo.rglob("*"):
            if src.is_file() and any(src.relative_to(repo).match(p) for p in allow_patterns):
                (snapshot / src.relative_to(repo)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, snapshot / src.relative_to(repo))
        if not snapshot.is_dir():
            raise FileNotFoundError(name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda name, revision=None: [
        p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()])
    return calls


def test_planning_fetches_configs_only(tiny_dir, tmp_path, monkeypatch):
    """A plan of a hub id not in the cache downloads its JSON configs only; loading then still fetches the
    weights, not mistaking the configs-only snapshot for the pipeline."""
    snapshot = tmp_path / "snapshot"
    calls = fake_hub(monkeypatch, tiny_dir, snapshot)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_model_dir("someone/tiny-pixart", weights=False) == snapshot
    assert calls == [None, ["*.json"]]
    assert not list(snapshot.rglob("*.safetensors"))
    calls.clear()
    assert resolve_model_dir("someone/tiny-pixart") == snapshot  # cached configs only: download the rest
    assert calls[0] is None and calls[1] == ["*.json", "*.model", "*.txt", "text_encoder/model-00001-of-00002.safetensors",
                                   "text_encoder/model-00002-of-00002.safetensors", f"transformer/{WEIGHTS}",
                                   f"vae/{WEIGHTS}"]
    assert (snapshot / "transformer" / WEIGHTS).is_file()


def test_a_variant_the_cached_snapshot_lacks_is_looked_for_on_the_hub(tiny_dir, tmp_path, monkeypatch):
    """As diffusers online: a snapshot cached with plain weights only still gets the fp16 files the hub has for
    variant="fp16"; offline, the cached snapshot is what there is."""
    import huggingface_hub
    hub = shutil.copytree(tiny_dir, tmp_path / "hub")  # the repository: an fp16 transformer beside the plain one
    fp16 = "transformer/diffusion_pytorch_model.fp16.safetensors"
    save_file({k: v.astype(np.float16) for k, v in load_file(str(hub / "transformer" / WEIGHTS)).items()},
              str(hub / fp16))
    snapshot = _hub_cache(tiny_dir, tmp_path / "cache", ["a" * 40], {"main": "a" * 40}) / ("a" * 40)
    calls = fake_hub(monkeypatch, hub, snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir("someone/tiny-pixart", variant="fp16", cache_dir=tmp_path / "cache") == snapshot
    assert calls == [None] and not (snapshot / fp16).exists()
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(name, revision=None):
        raise ConnectionError("Connection refused")

    with monkeypatch.context() as m:  # online but the hub can't be reached: the cached snapshot, as offline
        m.setattr(huggingface_hub, "list_repo_files", unreachable)
        assert resolve_model_dir("someone/tiny-pixart", variant="fp16", cache_dir=tmp_path / "cache") == snapshot
    calls.clear()
    assert resolve_model_dir("someone/tiny-pixart", variant="fp16", cache_dir=tmp_path / "cache") == snapshot
    cache, hub_patterns = calls  # the cache looked at, then the hub
    assert cache is None and hub_patterns == [
        "*.json", "*.model", "*.txt", "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors", fp16, f"vae/{WEIGHTS}"]
    assert (snapshot / fp16).is_file()
    calls.clear()  # now cached: loaded without going online
    assert resolve_model_dir("someone/tiny-pixart", variant="fp16", cache_dir=tmp_path / "cache") == snapshot
    assert calls == [None]


def test_a_cached_snapshot_with_variant_weights_only_names_the_variant(tiny_dir, tmp_path, monkeypatch):
    """Loaded without a variant, offline: said as a folder's weight_files says it, not as a configs-only snapshot."""
    revision = "a" * 40
    snapshot = _hub_cache(tiny_dir, tmp_path, [revision], {"main": revision}) / revision
    _rewrite(snapshot, "diffusion_pytorch_model.fp16.safetensors", lambda a: a.astype(np.float16))
    offline(monkeypatch, tmp_path)
    assert offline_error() == (
        "someone/tiny-pixart: not a local folder, in the Hugging Face cache without plain weights for transformer "
        "(found fp16 variant files: pass variant='fp16' / --variant fp16), and could not be downloaded "
        "(ConnectionError: HF_HUB_OFFLINE is set); pass the folder of a downloaded copy")  # no hint: its only snapshot
    assert resolve_model_dir("someone/tiny-pixart", variant="fp16") == snapshot


def test_a_repository_with_variant_weights_only_names_the_variant_before_downloading(tiny_dir, tmp_path,
                                                                                       monkeypatch):
    """Downloaded without a variant: said as a folder's weight_files says it, from the repository's file list,
    and no file downloaded (the plain weights it would fetch are not there)."""
    hub = shutil.copytree(tiny_dir, tmp_path / "hub")
    _rewrite(hub, "diffusion_pytorch_model.fp16.safetensors", lambda a: a.astype(np.float16))
    calls = fake_hub(monkeypatch, hub, tmp_path / "snapshot")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))  # not the machine's
    message = ("transformer: no weight file (diffusion_pytorch_model.safetensors or model.safetensors, or a "
               ".safetensors.index.json) (found fp16 variant files: pass variant='fp16' / --variant fp16)")
    with pytest.raises(CheckpointError) as info:
        PixArtSigmaPipeline.from_pretrained("someone/tiny-pixart", cache_dir=tmp_path / "cache")
    assert str(info.value) == f"someone/tiny-pixart: {message}" and calls == [None]
    assert load_error(hub) == f"{hub}/{message}"  # a local folder says the same
    with pytest.raises(CheckpointError) as info:  # a variant neither has: the one the repository has
        resolve_model_dir("someone/tiny-pixart", variant="bf16", revision="v1")
    assert str(info.value) == ("someone/tiny-pixart at revision 'v1': transformer: no weight file (diffusion_pytorch_"
                               "model.bf16.safetensors or model.bf16.safetensors, or a .safetensors.index.json) "
                               "(found fp16 variant files: pass variant='fp16' / --variant fp16)")
    # a base pipeline needs no transformer: its variant files alone are no error
    assert download_weight_names(["model_index.json", "transformer/config.json",
                                  "transformer/diffusion_pytorch_model.fp16.safetensors", f"vae/{WEIGHTS}"], None,
                                 ("text_encoder", "vae")) == [f"vae/{WEIGHTS}"]
    assert resolve_model_dir("someone/tiny-pixart", variant="fp16") == tmp_path / "snapshot"


def _rewrite(folder, name, convert):
    """Rewrite the transformer weights under `name` with arrays converted by `convert`."""
    src = folder / "transformer" / WEIGHTS
    tensors = load_file(str(src))
    src.unlink()
    save_file({k: convert(v) for k, v in tensors.items()}, str(folder / "transformer" / name))
    return tensors


@pytest.mark.parametrize("sharded", [False, True])
def test_variant_files_loaded_without_the_variant_are_named(broken, sharded):
    if sharded:  # as diffusers writes a sharded variant
        tensors = load_file(str(broken / "transformer" / WEIGHTS))
        (broken / "transformer" / WEIGHTS).unlink()
        shard = "diffusion_pytorch_model.fp16-00001-of-00001.safetensors"
        save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(broken / "transformer" / shard))
        (broken / "transformer" / "diffusion_pytorch_model.safetensors.index.fp16.json").write_text(
            json.dumps({"weight_map": {k: shard for k in tensors}}))
    else:
        _rewrite(broken, "diffusion_pytorch_model.fp16.safetensors", lambda a: a.astype(np.float16))
    assert load_error(broken).endswith("no weight file (diffusion_pytorch_model.safetensors or model.safetensors, or "
                                       "a .safetensors.index.json) (found fp16 variant files: pass variant='fp16' / "
                                       "--variant fp16)")
    with pytest.warns(UserWarning) as warned:  # the VAE and text encoder have no fp16 files
        PixArtSigmaPipeline.from_pretrained(broken, variant="fp16")
    assert len(warned) == 2 and not any("transformer" in str(w.message) for w in warned)


def test_download_takes_each_components_variant_files_or_else_its_plain_ones():
    files = ["model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
             "transformer/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors",
             "vae/diffusion_pytorch_model.bf16.safetensors", "text_encoder/model.safetensors.index.json",
             "text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors",
             "text_encoder/model.safetensors.index.fp16.json", "text_encoder/model.fp16-00001-of-00002.safetensors",
             "text_encoder/model.fp16-00002-of-00002.safetensors", "text_encoder/model-00003-of-00003.bf16.safetensors",
             "tokenizer/spiece.model"]
    assert download_weight_names(files, "fp16") == [
        "transformer/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.fp16-00001-of-00002.safetensors", "text_encoder/model.fp16-00002-of-00002.safetensors"]
    assert download_weight_names(files, None) == [
        "transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors"]


def test_download_takes_only_the_files_the_load_reads():
    """As diffusers downloads only the components model_index.json names: no other folder's weights (an EMA copy,
    a UNet, a root model.safetensors), and per component the files it loads of a single file and a shard index
    (`weight_files`: the index for the transformer and VAE, as diffusers, the single file for the text encoder,
    as transformers)."""
    sharded = ["diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model-00001-of-00002.safetensors",
               "diffusion_pytorch_model-00002-of-00002.safetensors"]
    files = ["model_index.json", "model.safetensors", "transformer/config.json", f"transformer/{WEIGHTS}",
             *(f"transformer/{name}" for name in sharded), "transformer_ema/config.json", f"transformer_ema/{WEIGHTS}",
             f"unet/{WEIGHTS}", f"vae/{WEIGHTS}", *(f"vae/{name}" for name in sharded),
             "text_encoder/model.safetensors", "text_encoder/model.safetensors.index.json",
             "text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors",
             f"text_encoder/nested/{WEIGHTS}"]
    assert download_weight_names(files, None) == [
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00002-of-00002.safetensors", "text_encoder/model.safetensors"]
    assert download_weight_names(files, None, ("text_encoder", "vae")) == [  # a base, for from_pretrained(transformer=)
        "text_encoder/model.safetensors", "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00002-of-00002.safetensors"]
    # a transformer-only repository: its transformer alone, whatever else it holds
    assert download_weight_names(["model.safetensors", "transformer/config.json", f"transformer/{WEIGHTS}",
                                  "transformer_ema/config.json", f"transformer_ema/{WEIGHTS}"], None) == [
        f"transformer/{WEIGHTS}"]
    # a pipeline without model_index.json: refused before anything is downloaded, as diffusers refuses it
    with pytest.raises(CheckpointError) as info:
        download_weight_names(files[1:] + ["scheduler/scheduler_config.json"], None)
    assert str(info.value) == ("no model_index.json; expected a pipeline folder in the diffusers layout (it holds "
                               "transformer/, vae/, text_encoder/, scheduler/; a transformer-only model holds "
                               "transformer/ alone)")


def test_a_folder_with_a_single_weight_file_and_a_shard_index_loads_what_the_reference_does(broken):
    """diffusers' ModelMixin (transformer, VAE) reads a shard index before a single file, transformers (the text
    encoder) a single file first: studio loads the same weights as they do (the files it doesn't read hold zeros),
    and its header checks and streamed text encoder read the same files."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    from studio.models.t5 import StreamedT5Encoder, T5EncoderModel

    shard = "diffusion_pytorch_model-00001-of-00001.safetensors"
    for component in ("transformer", "vae"):
        folder = broken / component
        tensors = load_file(str(folder / WEIGHTS))
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        save_file({k: v * 0 for k, v in tensors.items()}, str(folder / WEIGHTS), metadata={"format": "pt"})
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: shard for k in tensors}}))
        assert weight_files(folder) == [folder / shard]
    encoder = broken / "text_encoder"
    tensors = {k: v for f in weight_files(encoder) for k, v in load_file(str(f)).items()}
    save_file(tensors, str(encoder / "model.safetensors"), metadata={"format": "pt"})
    for f in (SHARD_1, SHARD_2):
        save_file({k: v * 0 for k, v in load_file(str(encoder / f)).items()}, str(encoder / f),
                  metadata={"format": "pt"})
    assert weight_files(encoder) == [encoder / "model.safetensors"]
    assert [f.path for f in StreamedT5Encoder(encoder).files] == [encoder / "model.safetensors"]
    pipe = PixArtSigmaPipeline.from_pretrained(broken)
    with torch.no_grad():
        references = [(pipe.transformer, diffusers.PixArtTransformer2DModel.from_pretrained(broken / "transformer")),
                      (pipe.vae, diffusers.AutoencoderKL.from_pretrained(broken / "vae")),
                      (T5EncoderModel.from_pretrained(encoder), transformers.T5EncoderModel.from_pretrained(encoder))]
    for model, reference in references:
        expected = reference.state_dict()
        for name, p in model.parameters_and_names():
            assert np.abs(p.asnumpy()).max() > 0, name
            np.testing.assert_array_equal(p.asnumpy(), expected[name].numpy(), err_msg=name)


def test_a_variant_named_with_dashes_or_dots_loads_as_in_diffusers(broken):
    """diffusers takes any variant name ('fp16-ema', 'ema.v2') and puts it before '.safetensors' as written: its
    files load, and only the components without them fall back to their plain ones (it was 'no component has
    fp16-ema weights')."""
    for variant in ("fp16-ema", "ema.v2"):
        folder = shutil.copytree(broken, broken.parent / variant)
        original = _rewrite(folder, f"diffusion_pytorch_model.{variant}.safetensors", lambda a: a * 2)
        with pytest.warns(UserWarning) as warned:
            pipe = PixArtSigmaPipeline.from_pretrained(folder, variant=variant)
        assert [str(w.message).split(" has no ")[0] for w in warned] == [f"studio: {folder / c}"
                                                                         for c in ("vae", "text_encoder")]
        got = dict(pipe.transformer.parameters_and_names())["proj_out.weight"].asnumpy()
        np.testing.assert_array_equal(got, original["proj_out.weight"] * 2)


def test_download_and_the_cache_check_read_variants_named_with_dashes():
    """A sharded 'fp16-ema' variant's files are downloaded (the shard names were not read as weight files), and
    a cached snapshot holding them is complete for variant='fp16-ema'."""
    files = ["model_index.json", f"transformer/{WEIGHTS}", "transformer/diffusion_pytorch_model.fp16-ema.safetensors",
             f"vae/{WEIGHTS}", "text_encoder/model.safetensors.index.fp16-ema.json",
             "text_encoder/model.fp16-ema-00001-of-00002.safetensors",
             "text_encoder/model.fp16-ema-00002-of-00002.safetensors", "text_encoder/model.safetensors"]
    assert download_weight_names(files, "fp16-ema") == [
        "transformer/diffusion_pytorch_model.fp16-ema.safetensors", f"vae/{WEIGHTS}",
        "text_encoder/model.fp16-ema-00001-of-00002.safetensors",
        "text_encoder/model.fp16-ema-00002-of-00002.safetensors"]
    assert download_weight_names(files, "fp16") == [f"transformer/{WEIGHTS}", f"vae/{WEIGHTS}",
                                                    "text_encoder/model.safetensors"]


def test_a_cached_snapshot_with_a_dashed_variant_loads_without_going_online(tiny_dir, tmp_path, monkeypatch):
    """Online, a snapshot holding a variant's files is loaded as cached (its 'fp16-ema' files were not seen, so
    the hub was asked for them)."""
    revision = "a" * 40
    snapshot = _hub_cache(tiny_dir, tmp_path, [revision], {"main": revision}) / revision
    _rewrite(snapshot, "diffusion_pytorch_model.fp16-ema.safetensors", lambda a: a)
    calls = fake_hub(monkeypatch, tmp_path / "no-repository", snapshot)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_model_dir("someone/tiny-pixart", variant="fp16-ema", cache_dir=tmp_path) == snapshot
    assert calls == [None]  # the cache looked at, not the hub


def test_fp16_variant_loads_into_fp32(broken):
    original = _rewrite(broken, "diffusion_pytorch_model.fp16.safetensors", lambda a: a.astype(np.float16))
    with pytest.raises(CheckpointError, match="no weight file"):
        weight_files(broken / "transformer")
    model = PixArtTransformer2DModel.from_pretrained(broken / "transformer", variant="fp16")
    got = dict(model.parameters_and_names())["proj_out.weight"].asnumpy()
    np.testing.assert_array_equal(got, original["proj_out.weight"].astype(np.float16).astype(np.float32))


def test_a_component_without_the_variants_files_loads_its_plain_ones(broken):
    """As the reference: variant="fp16" takes the fp16 transformer and the plain VAE and text encoder, and says
    so once per component (not again when the text encoder is loaded for a prompt)."""
    original = _rewrite(broken, "diffusion_pytorch_model.fp16.safetensors", lambda a: a.astype(np.float16))
    with pytest.warns(UserWarning) as warned:
        pipe = PixArtSigmaPipeline.from_pretrained(broken, variant="fp16")
    assert [str(w.message) for w in warned] == [
        f"studio: {broken / 'vae'} has no fp16 weights; loading its plain ones ({WEIGHTS}), as diffusers does",
        f"studio: {broken / 'text_encoder'} has no fp16 weights; loading its plain ones "
        "(model-00001-of-00002.safetensors, ...), as diffusers does"]
    pipe.encode_prompt("a cat")  # no warning (they are errors here)
    got = dict(pipe.transformer.parameters_and_names())["proj_out.weight"].asnumpy()
    np.testing.assert_array_equal(got, original["proj_out.weight"].astype(np.float16).astype(np.float32))
    assert weight_files(broken / "vae", "fp16") == [broken / "vae" / WEIGHTS]
    with pytest.raises(CheckpointError, match="no weight file \\(diffusion_pytorch_model.bf16.safetensors"):
        weight_files(broken / "transformer", "bf16")  # neither the variant's files nor plain ones


def test_a_variant_no_component_has_is_an_error(broken):
    """As diffusers: variant="fp16" loads plain files only beside some fp16 ones; with none at all it is an error,
    said before any weight is read; and use_safetensors=False asks for what studio refuses to read."""
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(broken))}: no component has fp16 weights "
                                              "\\(\\*.fp16.safetensors\\); pass no variant to load the plain ones$"):
        PixArtSigmaPipeline.from_pretrained(broken, variant="fp16")
    with pytest.raises(InputError, match="use_safetensors=False: studio reads only safetensors"):
        PixArtSigmaPipeline.from_pretrained(broken, use_safetensors=False)


def test_bfloat16_asked_through_the_api_is_said_to_compute_in_float32(tiny_dir):
    with pytest.warns(UserWarning, match="^studio: bfloat16 computes in float32 here: MindSpore has no bfloat16 "
                                         "matmul on the CPU") as caught:
        pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir, dtype="bfloat16", use_safetensors=True)
    assert pipe.dtype == ms.float32 and [w.filename for w in caught] == [__file__]  # once, at the caller's line


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
                                      ("a/b/c", False), ("tiny", False), ("a\\b/c", False), ("made/here", False),
                                      ("made/dangling", False), ("made/loop", False)])
def test_is_hub_id(tmp_path, name, hub):
    from studio.hub import is_hub_id
    (tmp_path / "made" / "here").mkdir(parents=True)  # an existing relative path is a folder, not an id
    os.symlink("/nonexistent", tmp_path / "made" / "dangling")  # so is a broken link, or a looping one
    os.symlink("loop", tmp_path / "made" / "loop")
    assert is_hub_id(name, tmp_path) is hub


def test_torch_dtype_is_the_references_name_for_dtype(tiny_dir):
    torch = pytest.importorskip("torch")
    with pytest.warns(UserWarning, match="^studio: float16 on the CPU is about 4x slower"):
        assert PixArtSigmaPipeline.from_pretrained(tiny_dir, torch_dtype=torch.float16).dtype == ms.float16
    with pytest.raises(InputError, match="pass dtype or torch_dtype"):
        PixArtSigmaPipeline.from_pretrained(tiny_dir, dtype="float16", torch_dtype=torch.float16)


def _split(tiny_dir, tmp_path, monkeypatch) -> Path:
    """The tiny pipeline but its transformer as the base $STUDIO_BASE_PIPELINE names (composed pipelines under a
    temporary $STUDIO_CACHE); returns the base folder."""
    base = shutil.copytree(tiny_dir, tmp_path / "base")
    shutil.rmtree(base / "transformer")
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(base))
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "studio"))
    return base


def test_a_cached_snapshot_of_a_transformer_only_repository_resolves_offline_with_the_base(tiny_dir, tmp_path,
                                                                                          monkeypatch):
    """As the published 512 and 2K repositories are: transformer/ and no model_index.json. Its transformer's
    weights make the snapshot complete; the rest comes from the base."""
    import huggingface_hub

    base = _split(tiny_dir, tmp_path, monkeypatch)
    revision = "a" * 40
    snapshot = tmp_path / "hub" / "models--someone--tiny-pixart" / "snapshots" / revision
    shutil.copytree(tiny_dir / "transformer", snapshot / "transformer")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda *a, **k: pytest.fail("went online"))
    note = ("studio: someone/tiny-pixart holds a transformer only; the rest of the pipeline (text encoder, tokenizer, "
            f"VAE, scheduler) comes from {base} ($STUDIO_BASE_PIPELINE)")
    with pytest.warns(UserWarning, match=f"^{re.escape(note)}$"):
        folder = resolve_model_dir("someone/tiny-pixart", local_files_only=True)
    assert folder.parent == tmp_path / "studio" / "composed"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        p.relative_to(tiny_dir).as_posix() for p in tiny_dir.rglob("*") if p.is_file())
    assert (folder / "transformer" / WEIGHTS).resolve() == (snapshot / "transformer" / WEIGHTS).resolve()
    assert json.loads((folder / "model_index.json").read_text()) == json.loads((base / "model_index.json").read_text())
    (snapshot / "transformer" / WEIGHTS).unlink()  # configs only, as a plan fetches them: not complete offline
    with pytest.raises(CheckpointError, match="^someone/tiny-pixart: not a local folder, in the Hugging Face cache "
                                              "with its configs only, not its weights, and could not be downloaded "
                                              r"\(local_files_only=True\)"):
        resolve_model_dir("someone/tiny-pixart", local_files_only=True)


def test_a_hub_pipeline_without_model_index_json_is_refused_not_completed_with_the_base(tiny_dir, tmp_path,
                                                                                      monkeypatch):
    """A repository (or its cached snapshot) holding a whole pipeline but no model_index.json was taken for a
    transformer-only one: its VAE and text encoder replaced by the base's. Refused, as diffusers refuses it: a
    cached snapshot naming its folders, a repository before any file is downloaded."""
    _split(tiny_dir, tmp_path, monkeypatch)
    folders = "transformer/, vae/, text_encoder/, tokenizer/, scheduler/"
    snapshot = _hub_cache(tiny_dir, tmp_path / "hub", ["a" * 40], {"main": "a" * 40}) / ("a" * 40)
    (snapshot / "model_index.json").unlink()
    offline(monkeypatch, tmp_path / "hub")
    assert offline_error() == (f"{snapshot}: no model_index.json; expected a pipeline folder in the diffusers layout "
                               f"(it holds {folders}; a transformer-only model holds transformer/ alone)")
    hub = shutil.copytree(snapshot, tmp_path / "repo")
    calls = fake_hub(monkeypatch, hub, tmp_path / "snapshot")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError) as info:
        resolve_model_dir("someone/tiny-pixart")
    assert str(info.value) == (f"someone/tiny-pixart: no model_index.json; expected a pipeline folder in the "
                               f"diffusers layout (it holds {folders}; a transformer-only model holds transformer/ "
                               "alone)")
    assert calls == [None]  # the cache looked at, nothing downloaded


def test_the_published_base_from_the_hub_cache_has_no_transformer_and_is_complete(tiny_dir, tmp_path, monkeypatch):
    """PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers holds no transformer: cached, offline, it completes a
    transformer-only model (its snapshot was taken as lacking the transformer's weights)."""
    from studio.checkpoint import BASE_PIPELINE

    revision = "b" * 40
    repo = tmp_path / "hub" / f"models--{BASE_PIPELINE.replace('/', '--')}"
    shutil.copytree(tiny_dir, repo / "snapshots" / revision, ignore=shutil.ignore_patterns("transformer"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    only = tmp_path / "only"
    shutil.copytree(tiny_dir / "transformer", only / "transformer")
    monkeypatch.delenv("STUDIO_BASE_PIPELINE", raising=False)
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "studio"))
    offline(monkeypatch, tmp_path / "hub")
    with pytest.warns(UserWarning, match=f"comes from {re.escape(BASE_PIPELINE)}$"):
        folder = resolve_model_dir(only)
    assert (folder / "vae" / WEIGHTS).resolve() == (repo / "snapshots" / revision / "vae" / WEIGHTS).resolve()
    assert (folder / "transformer" / WEIGHTS).resolve() == only / "transformer" / WEIGHTS


def test_a_composed_pipeline_is_reused_and_follows_its_folders(tiny_dir, tmp_path, monkeypatch):
    """The same contents: the same composed folder; a file added to the base: another folder (one never changes
    once written, so processes composing at once share it); a base whose model_index.json names no transformer
    (as the published one) gets it named."""
    from studio.checkpoint import compose

    base = _split(tiny_dir, tmp_path, monkeypatch)
    folder = compose(tiny_dir / "transformer", base, "tiny")
    assert folder.name.startswith("tiny-") and compose(tiny_dir / "transformer", base, "tiny") == folder
    (base / "vae" / "notes.txt").write_text("x")
    other = compose(tiny_dir / "transformer", base, "tiny")
    assert other != folder and (other / "vae" / "notes.txt").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "studio" / "composed").iterdir()) == sorted([folder.name, other.name])
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, "transformer": [None, None]}))
    assert json.loads((compose(tiny_dir / "transformer", base) / "model_index.json").read_text()) == index
    (base / "transformer").mkdir()  # the given transformer wins over the base's
    (base / "transformer" / "config.json").write_text("{}")
    assert (compose(tiny_dir / "transformer", base) / "transformer" / "config.json").resolve() == (
        tiny_dir / "transformer" / "config.json")


def test_a_failed_compose_leaves_no_temporary_folder(tiny_dir, tmp_path, monkeypatch):
    """A disk that fills up while the links are written: a CheckpointError naming the folder, and the temporary
    folder removed (it stayed in $STUDIO_CACHE/composed for good). One a killed run left is removed by the next
    compose, one a running process is writing is not."""
    import errno
    import subprocess
    import sys

    from studio import checkpoint
    from studio.checkpoint import compose

    base = _split(tiny_dir, tmp_path, monkeypatch)
    composed = tmp_path / "studio" / "composed"
    real_symlink, made = os.symlink, []

    def symlink(target, link):
        if len(made) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        made.append(link)
        real_symlink(target, link)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.os, "symlink", symlink)
        with pytest.raises(CheckpointError, match=r"composed/tiny-[0-9a-f]{16}: cannot write the pipeline composed "
                                                  r"of .* \(No space left on device\); set \$STUDIO_CACHE"):
            compose(tiny_dir / "transformer", base, "tiny")
    assert len(made) == 3 and list(composed.iterdir()) == []
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    folder = compose(tiny_dir / "transformer", base, "tiny")
    shutil.rmtree(folder)
    killed, running = (composed / f".{folder.name}.{pid:06x}00.part" for pid in (dead, os.getppid()))
    for left in (killed, running):
        (left / "vae").mkdir(parents=True)
    assert compose(tiny_dir / "transformer", base, "tiny") == folder
    assert sorted(p.name for p in composed.iterdir()) == sorted([folder.name, running.name])


def test_a_transformer_only_repository_downloads_its_transformer(tiny_dir, tmp_path, monkeypatch):
    """Planned: its configs fetched; loaded: its transformer's weights, the configs-only snapshot not taken for
    complete (it was taken as lacking the text encoder's and VAE's weights, which it never has), and no other
    folder's (an EMA copy: its weights were downloaded too)."""
    base = _split(tiny_dir, tmp_path, monkeypatch)
    hub, snapshot = tmp_path / "repo", tmp_path / "snapshot"
    shutil.copytree(tiny_dir / "transformer", hub / "transformer")
    shutil.copytree(tiny_dir / "transformer", hub / "transformer_ema")
    calls = fake_hub(monkeypatch, hub, snapshot)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.warns(UserWarning, match=f"comes from {re.escape(str(base))}"):
        folder = resolve_model_dir("someone/big-transformer", weights=False)
    assert calls == [None, ["*.json"]] and not (folder / "transformer" / WEIGHTS).exists()
    calls.clear()
    folder = resolve_model_dir("someone/big-transformer")  # with its weights now: another composed folder
    assert calls == [None, ["*.json", "*.model", "*.txt", f"transformer/{WEIGHTS}"]]
    assert (folder / "transformer" / WEIGHTS).is_file() and (folder / "vae" / WEIGHTS).is_file()


def test_the_transformer_keyword_downloads_a_pipelines_transformer_alone(tiny_dir, tmp_path, monkeypatch):
    """transformer="owner/pipeline" names a whole pipeline on the hub: of its weights, only its transformer's are
    fetched (its text encoder's and VAE's were too, never read)."""
    from studio.checkpoint import transformer_folder

    calls = fake_hub(monkeypatch, tiny_dir, tmp_path / "snapshot")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert transformer_folder("someone/tiny-pixart") == tmp_path / "snapshot" / "transformer"
    assert calls[-1] == ["*.json", "*.model", "*.txt", f"transformer/{WEIGHTS}"]


def _published_pair(tiny_dir, cache: Path) -> tuple[Path, Path]:
    """A Hugging Face cache holding the tiny pipeline split as the published checkpoints are: BASE_PIPELINE
    without a transformer (its model_index.json naming none), and someone/tiny-2k holding transformer/ alone.
    Returns (the base's snapshot, the transformer model's)."""
    from studio.checkpoint import BASE_PIPELINE

    base = cache / f"models--{BASE_PIPELINE.replace('/', '--')}" / "snapshots" / ("b" * 40)
    shutil.copytree(tiny_dir, base, ignore=shutil.ignore_patterns("transformer"))
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, "transformer": [None, None]}))
    only = cache / "models--someone--tiny-2k" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_dir / "transformer", only / "transformer")
    for snapshot in (base, only):
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text(snapshot.name)
    return base, only


def test_the_transformer_keyword_takes_the_published_base_from_the_cache(tiny_dir, tmp_path, monkeypatch):
    """from_pretrained(BASE_PIPELINE, transformer="owner/2k"), both cached: the base needs no transformer of its
    own (it was taken as lacking one: an error offline, a download each time online), and the composed folder is
    named after the transformer's model."""
    import huggingface_hub
    from studio.checkpoint import BASE_PIPELINE

    base, only = _published_pair(tiny_dir, tmp_path / "hub")
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "studio"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("STUDIO_BASE_PIPELINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for offline in ("1", None):
        if offline:
            monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        else:  # online: nothing to download
            monkeypatch.delenv("HF_HUB_OFFLINE")
            monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda *a, **k: pytest.fail("went online"))
        pipe = PixArtSigmaPipeline.from_pretrained(BASE_PIPELINE, transformer="someone/tiny-2k")
        assert pipe.model_dir.parent == tmp_path / "studio" / "composed"
        assert pipe.model_dir.name.startswith("tiny-2k-")
        assert (pipe.model_dir / "transformer" / WEIGHTS).resolve() == only / "transformer" / WEIGHTS
        assert (pipe.model_dir / "vae" / WEIGHTS).resolve() == base / "vae" / WEIGHTS


def _lose(snapshot: Path, rel: str) -> None:
    """`rel` in a cached snapshot as huggingface_hub leaves a file whose blob is gone: a link to a missing blob."""
    blob = snapshot.parent.parent / "blobs" / rel.replace("/", "-")
    blob.parent.mkdir(exist_ok=True)
    (snapshot / rel).unlink()
    (snapshot / rel).symlink_to(os.path.relpath(blob, (snapshot / rel).parent))


@pytest.mark.parametrize("loss", ["blob", "shard"])
def test_a_cached_snapshot_that_lost_a_weight_file_is_repaired_online(tiny_dir, tmp_path, monkeypatch, loss):
    """Online, a weight file whose blob is gone, or a shard its index lists that is missing, makes the snapshot
    incomplete: downloaded again (it was taken as complete by the files' names, and never repaired); offline,
    the snapshot is loaded and the loader's one-line error names the file."""
    revision = "a" * 40
    snapshot = _hub_cache(tiny_dir, tmp_path / "cache", [revision], {"main": revision}) / revision
    lost = f"vae/{WEIGHTS}" if loss == "blob" else "text_encoder/model-00002-of-00002.safetensors"
    if loss == "blob":
        _lose(snapshot, lost)
    else:
        (snapshot / lost).unlink()
    calls = fake_hub(monkeypatch, tiny_dir, snapshot)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir("someone/tiny-pixart", cache_dir=tmp_path / "cache") == snapshot
    problem = "a broken symbolic link" if loss == "blob" else "missing shard listed in model.safetensors.index.json"
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(snapshot / lost))}: {problem}"):
        PixArtSigmaPipeline.from_pretrained("someone/tiny-pixart", cache_dir=tmp_path / "cache")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls.clear()
    assert resolve_model_dir("someone/tiny-pixart", cache_dir=tmp_path / "cache") == snapshot
    assert calls[0] is None and lost in calls[1] and (snapshot / lost).is_file()
    calls.clear()  # repaired: loaded without going online
    assert resolve_model_dir("someone/tiny-pixart", cache_dir=tmp_path / "cache") == snapshot and calls == [None]


@pytest.mark.parametrize("environment, offline", [
    ({"HF_HUB_OFFLINE": "ON"}, "HF_HUB_OFFLINE"), ({"HF_HUB_OFFLINE": "yes"}, "HF_HUB_OFFLINE"),
    ({"TRANSFORMERS_OFFLINE": "1"}, "TRANSFORMERS_OFFLINE"),
    ({"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}, None),  # the first one set decides
    ({"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "true"}, "TRANSFORMERS_OFFLINE"),
])
def test_offline_is_read_from_the_environment_as_huggingface_hub_reads_it(tmp_path, monkeypatch, environment, offline):
    """HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE, with huggingface_hub's true values, read at the call."""
    import huggingface_hub

    def asked(*args, **kwargs):
        raise OSError("the hub was asked")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", asked)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    why = f"ConnectionError: {offline} is set" if offline else "OSError: the hub was asked"
    with pytest.raises(CheckpointError, match=f"could not be downloaded \\({why}\\)"):
        resolve_model_dir("owner/missing-model")


@pytest.mark.parametrize("variables, expected", [
    ({"HF_HUB_CACHE": "~/hub"}, "hub"), ({"HF_HUB_CACHE": "$CACHES/hub"}, "huggingface/hub"),
    ({"HUGGINGFACE_HUB_CACHE": "$CACHES/hub"}, "huggingface/hub"), ({"HF_HOME": "$CACHES"}, "huggingface/hub"),
    ({"XDG_CACHE_HOME": "$CACHES/.."}, "huggingface/hub"), ({"HF_HOME": "~/hf"}, "hf/hub"),
])
def test_the_hub_cache_is_found_as_huggingface_hub_finds_it(tiny_dir, tmp_path, monkeypatch, variables, expected):
    """At the call, with ~ and $VARIABLES expanded; $HF_HOME/hub and $XDG_CACHE_HOME/huggingface/hub too."""
    from studio.checkpoint import hub_cache

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CACHES", str(tmp_path / "huggingface"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Path(os.path.normpath(hub_cache())) == tmp_path / expected
    snapshots = _hub_cache(tiny_dir, tmp_path / expected, ["a" * 40], {"main": "a" * 40})
    assert resolve_model_dir("someone/tiny-pixart") == snapshots / ("a" * 40)


def test_the_cached_revisions_named_leave_out_the_rejected_one_and_name_their_refs(tiny_dir, tmp_path, monkeypatch):
    """Offline, a snapshot refused (configs only, as a plan fetches): the hint names the others, sorted, each with
    the branches and tags that point to it, not the one just refused."""
    main, tagged, bare = "c" * 40, "a" * 40, "b" * 40
    snapshots = _hub_cache(tiny_dir, tmp_path, [main, tagged, bare], {"main": main, "v1": tagged, "dev": tagged})
    for weights in (snapshots / main).rglob("*.safetensors"):
        weights.unlink()
    offline(monkeypatch, tmp_path)
    assert offline_error() == (
        "someone/tiny-pixart: not a local folder, in the Hugging Face cache with its configs only, not its weights, "
        f"and could not be downloaded (ConnectionError: HF_HUB_OFFLINE is set); the cache holds it at "
        f"revision='{tagged}' (dev, v1), revision='{bare}'; pass the folder of a downloaded copy")


@pytest.mark.parametrize("variables, expected", [
    ({"STUDIO_CACHE": "~/sc"}, "sc/composed"), ({"STUDIO_CACHE": "$CACHES/sc"}, "caches/sc/composed"),
    ({"XDG_CACHE_HOME": "~/xdg"}, "xdg/studio/composed"), ({"XDG_CACHE_HOME": "$CACHES"}, "caches/studio/composed"),
    ({}, ".cache/studio/composed"),
])
def test_composed_pipelines_go_to_the_cache_with_tilde_and_variables_expanded(tiny_dir, tmp_path, monkeypatch,
                                                                               variables, expected):
    """$STUDIO_CACHE, else $XDG_CACHE_HOME/studio, else ~/.cache/studio, as the hub cache is found: '~/sc' made a
    folder named '~' in the working folder."""
    from studio.checkpoint import compose, is_composed
    from studio.paths import cache_root

    base = _split(tiny_dir, tmp_path, monkeypatch)
    work = cache_environment(monkeypatch, tmp_path, variables)
    assert cache_root("composed") == tmp_path / expected
    folder = compose(tiny_dir / "transformer", base, "tiny")
    assert folder.parent == tmp_path / expected and is_composed(folder)
    assert list(work.iterdir()) == []


def test_errors_resolving_a_model_name_it(tiny_dir, tmp_path, monkeypatch):
    """A CheckpointError of resolve_model_dir about the model (or the transformer= model) itself has it as its
    `model`, what the CLI says came from $STUDIO_MODEL; one about a file or the cache has none."""
    from studio.checkpoint import MissingBase

    def error(*args, **kwargs) -> CheckpointError:
        with pytest.raises(CheckpointError) as info:
            resolve_model_dir(*args, **kwargs)
        return info.value

    nope = tmp_path / "nope"
    assert error(nope).model == str(nope)
    assert error(str(nope)).model == str(nope)
    assert error(tiny_dir, transformer=nope).model == str(nope)
    only = tmp_path / "only"
    shutil.copytree(tiny_dir / "transformer", only / "transformer")
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(nope))
    missing_base = error(only)
    assert isinstance(missing_base, MissingBase) and missing_base.model == str(only)
    assert str(missing_base).startswith(f"{only}: holds a transformer only")
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(tiny_dir))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "file" / "cache"))  # no folder can be made there
    with pytest.warns(UserWarning, match="holds a transformer only"):
        unwritable = error(only)
    assert str(unwritable).endswith("set $STUDIO_CACHE to a writable folder") and unwritable.model is None
    with pytest.raises(CheckpointError) as info:
        weight_files(tmp_path / "nope")
    assert info.value.model is None


def test_a_download_error_is_said_by_its_first_line():
    """huggingface_hub's errors run over lines (a response body): the first, stripped, cut at 200 characters and on
    one line, else the error's type."""
    from studio.errors import first_line

    assert first_line(OSError("\n  404 Not Found  \nbody\nmore")) == "404 Not Found"
    assert first_line(ValueError("x" * 300)) == "x" * 200 and first_line(ValueError("x" * 30), limit=10) == "x" * 10
    assert first_line(RuntimeError("a\tb\x1b[31m")) == "a\\tb\\x1b[31m"
    assert first_line(ConnectionError()) == first_line(ConnectionError(" \n ")) == "ConnectionError"


def test_a_failed_download_names_the_first_line_of_its_error(tmp_path, monkeypatch):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("503 Service Unavailable\n<html>" + "x" * 500 + "</html>")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", unreachable)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(CheckpointError) as info:
        resolve_model_dir("owner/missing-model")
    assert str(info.value) == ("owner/missing-model: not a local folder, not in the Hugging Face cache, and could not "
                               "be downloaded (OSError: 503 Service Unavailable); pass the folder of a downloaded copy")
    assert info.value.model == "owner/missing-model"
