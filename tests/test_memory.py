"""Budget parsing and chunk planning: exact tables."""

import math
import re
from fractions import Fraction

import numpy as np
import pytest

from studio import memory
from studio.errors import InputError, PlanError
from studio.memory import KiB, GiB, MiB, AttentionChunks, attention_chunks, format_bytes, parse_bytes


@pytest.mark.parametrize("text,expected", [
    ("6GiB", 6 * GiB), ("512MiB", 512 * MiB), ("2GB", 2_000_000_000), ("1.5g", 1_500_000_000),
    (" 3 gib ", 3 * GiB), (123456, 123456), ("1000B", 1000), (None, None), ("auto", None)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["6 parsecs", "-1GiB", "GiB", 0, "1e3", "6", "1000"])  # text needs a unit
def test_parse_bytes_rejects(bad):
    with pytest.raises(InputError, match="memory budget"):
        parse_bytes(bad)


@pytest.mark.parametrize("value,message", [
    (float("inf"), "memory budget must be a finite number of bytes, got inf"),
    (float("nan"), "memory budget must be a finite number of bytes, got nan"),
    ("0", "memory budget must be positive, got '0'"), ("0GiB", "memory budget must be positive, got '0GiB'")])
def test_parse_bytes_says_why(value, message):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        parse_bytes(value)


@pytest.mark.parametrize("value, expected", [
    ("8.2GB", 8_200_000_000), ("1.005KB", 1005), ("0.1KiB", 102), ("16TiB", 16 * 1024 ** 4),
    (2 ** 64, 2 ** 64), (f"{2 ** 64}B", 2 ** 64), ("18446744073.709551616GB", 2 ** 64)])
def test_parse_bytes_reads_decimals_exactly_up_to_16_eib(value, expected):
    """As written, not through a float ('8.2GB' was 8,199,999,999 bytes), up to all a 64-bit address space holds."""
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", [
    "1" * 310 + "B", "1" * 400 + ".5GiB", f"{2 ** 64 + 1}B", "18446744073.709551617GB", 2 ** 64 + 1, 10 ** 400,
    1e300, Fraction(10 ** 400, 3)])
def test_a_budget_beyond_16_eib_is_refused_in_a_line(value):
    """Past any memory (past a float's range too: it raised OverflowError) is a user's mistake, said as such."""
    with pytest.raises(InputError, match=r"^memory budget must be at most 16 EiB \(18446744073709551616 bytes\), "
                                         r"got .{1,500}$"):
        parse_bytes(value)


def test_numpy_numbers_are_bytes():
    assert parse_bytes(np.int64(2 ** 31)) == 2 ** 31 and parse_bytes(np.float32(1e9)) == 1_000_000_000


def _cgroup(folder, limit, usage, inactive, v1=False):
    folder.mkdir(parents=True, exist_ok=True)
    names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file") if v1 else \
        ("memory.max", "memory.current", "inactive_file")
    (folder / names[0]).write_text(f"{limit}\n")
    (folder / names[1]).write_text(f"{usage}\n")
    (folder / "memory.stat").write_text(f"anon 5\n{names[2]} {inactive}\nfile 9\n")


def test_the_automatic_budget_stays_inside_the_memory_cgroups(tmp_path):
    """A container's or a Slurm job's limit: limit - (usage - inactive file cache), the least over the levels
    from the process's cgroup up; none set (v2 'max', v1's huge number) or none readable: no bound."""
    from studio.backend import cgroup_room
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    proc.write_text("0::/job_7/step_0\n")
    _cgroup(root / "job_7" / "step_0", "max", 3 * GiB, 0)
    _cgroup(root / "job_7", 4 * GiB, 3 * GiB, 1 * GiB)
    assert cgroup_room(str(proc), str(root)) == 2 * GiB
    _cgroup(root / "job_7" / "step_0", 3 * GiB, 3 * GiB - 100, 50)
    assert cgroup_room(str(proc), str(root)) == 150  # the tighter level
    _cgroup(root / "job_7", "max", 0, 0)
    _cgroup(root / "job_7" / "step_0", "max", 0, 0)
    assert cgroup_room(str(proc), str(root)) == float("inf")
    proc.write_text("5:cpu,memory:/pod/ctr\n4:pids:/\n")  # v1
    _cgroup(root / "memory" / "pod" / "ctr", 2 ** 63 - 4096, 7, 0, v1=True)
    _cgroup(root / "memory" / "pod", 8 * GiB, 6 * GiB, 0, v1=True)
    assert cgroup_room(str(proc), str(root)) == 2 * GiB
    assert cgroup_room(str(tmp_path / "none"), str(root)) == float("inf")


@pytest.mark.parametrize("stat", [None, "anon 5\ninactive_file\nfile 9\n", "anon\ninactive_file 1x\n", "garbage\n\n"])
def test_a_cgroup_limit_holds_whatever_its_memory_stat(tmp_path, stat):
    """memory.stat missing or malformed: the level's limit still bounds the room, nothing counted reclaimable."""
    from studio.backend import cgroup_room
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    proc.write_text("0::/job\n")
    _cgroup(root / "job", 2 * GiB, 1 * GiB, 512 * MiB)
    if stat is None:
        (root / "job" / "memory.stat").unlink()
    else:
        (root / "job" / "memory.stat").write_text(stat)
    assert cgroup_room(str(proc), str(root)) == 1 * GiB
    _cgroup(root / "job", 2 * GiB, 1 * GiB, 512 * MiB)  # readable: its inactive file cache counts
    assert cgroup_room(str(proc), str(root)) == 1 * GiB + 512 * MiB


def test_blank_and_malformed_lines_of_the_process_cgroup_file_name_no_hierarchy(tmp_path):
    from studio.backend import cgroup_room
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    proc.write_text("\n0::/job\nnonsense\n4:pids\n")
    _cgroup(root / "job", 2 * GiB, 1 * GiB, 0)
    assert cgroup_room(str(proc), str(root)) == 1 * GiB


# (batch*heads, Nq, Nk, head_dim, budget) -> (q block, k block); workspace = bh*q*(k*16 + d*12)
@pytest.mark.parametrize("bh,nq,nk,d,budget,expected", [
    (32, 4096, 4096, 72, None, (4096, 4096)),                      # no budget: whole
    (32, 4096, 4096, 72, 32 * 4096 * (4096 * 16 + 72 * 12), (4096, 4096)),   # exactly fits: whole
    (32, 4096, 4096, 72, 32 * 4096 * (4096 * 16 + 72 * 12) - 1, (4095, 4096)),
    (32, 16384, 16384, 72, 1 * GiB, (127, 16384)),                 # 2K self-attention in 1 GiB
    (32, 16384, 300, 72, 1 * GiB, (5924, 300)),                    # cross-attention to 300 tokens
    (32, 65536, 65536, 72, 1 * GiB, (256, 8138)),                  # 4K: keys chunked
    (32, 16384, 16384, 72, 64 * GiB, (2041, 16384)),              # scores block capped at 4 GiB
    (32, 16384, 16384, 72, None, (2041, 16384)),                  # ... with no budget too
    (2, 1000, 1000, 8, 2 * 64 * (1000 * 16 + 96), (64, 1000)),     # exactly MIN_Q_ROWS rows
    (2, 1000, 1000, 8, 2 * 64 * (1000 * 16 + 96) - 1, (256, 245)),  # one byte less: key blocks
    (1, 10, 10, 4, 5 * (10 * 16 + 48), (5, 10)),                   # short sequences: any row count
    (1, 10, 10, 4, 2 * (1 * 16 + 48), (1, 5)),                     # not one row of keys: key blocks
    (1, 4471, 4471, 512, 70 * (1024 * 16 + 512 * 12), (128, 386)),  # the accumulators take half at most
    (1, 2, 7, 1, 50, (1, 2)),             # head_dim 1: half the budget is less than a key per row at q = 2
    (1, 2, 7, 1, 28, (1, 1)),             # ... the least workspace, one 1 x 1 block (1 x 16 + 1 x 12)
    (1, 256, 4096, 1, 6144, (128, 2)),    # ... q = 256 leaves 12 of a key's 16 bytes per row: halved once
    (3, 300, 300, 1, 3 * 28 * 64, (64, 1)),  # ... over 3 heads: one key for 64 rows exactly
    (3, 300, 300, 1, 3 * 28 * 64 - 1, (32, 2)),  # one byte less: 32 rows
])
def test_attention_chunks_table(bh, nq, nk, d, budget, expected):
    assert attention_chunks(bh, nq, nk, d, budget) == AttentionChunks(*expected)
    if budget is not None:
        q, k = expected
        assert memory.attention_workspace(bh, q, k, d) <= budget and bh * q * k * 4 <= memory.MAX_TENSOR


# (batch*heads, Nq, Nk, head_dim) -> the planner's smallest block, and the chunks attention_chunks runs in
# its workspace: at most ~64 x 64 blocks (5,120 with rounding) however long the sequence
@pytest.mark.parametrize("bh,nq,nk,d,block,chunks", [
    (1, 129600, 129600, 16, (2025, 2025), (256, 16100)),   # 4K decode's mid-block, tiny VAE: 507 x 9 blocks
    (1, 129600, 129600, 512, (2025, 2025), (256, 18671)),  # ... SDXL VAE: 507 x 7
    (1, 16384, 16384, 512, (256, 1024), (256, 1024)),      # 1024^2 decode's mid-block: 64 x 16
    (4, 32400, 32400, 16, (507, 1024), (256, 2039)),       # 4K self-attention, tiny, CFG: 127 x 16
    (4, 4096, 4096, 16, (64, 1024), (256, 247)),           # MIN_BLOCK_Q x MIN_BLOCK_K: 16 x 17
    (1, 4471, 4471, 512, (70, 1024), (128, 386)),          # wide heads: 35 x 12
    (4, 32400, 300, 16, (507, 300), (507, 300)),           # few keys: 64 query blocks
    (1, 300, 300, 16, (64, 300), (64, 300)),
    (1, 261094, 261094, 16, (4080, 4080), (256, 65204)),   # the most blocks: 1020 x 5
])
def test_the_planners_smallest_block_bounds_the_blocks(bh, nq, nk, d, block, chunks):
    from studio.memory_plan import smallest_block, smallest_workspace
    assert smallest_block(nq, nk) == block
    got = attention_chunks(bh, nq, nk, d, memory.attention_workspace(bh, *block, d))
    assert got == AttentionChunks(*chunks) and -(-nq // got.q) * -(-nk // got.k) <= 5120
    # the planner's least workspace is these chunks', and in it attention_chunks runs them again
    least = smallest_workspace(bh, nq, nk, d)
    assert least == memory.attention_workspace(bh, *chunks, d) and attention_chunks(bh, nq, nk, d, least) == got


# Past ~10,000^2 px the smallest block's fp32 scores exceed MAX_TENSOR (4 GiB), so no budget runs it: the
# planner's least workspace is that of the capped blocks attention_chunks runs at every budget, as few
# blocks as the cap allows (scores / 4 GiB: 5,184, 16,384, 32,768) instead of at most 5,120
# (batch*heads, Nq, Nk, head_dim) -> the smallest block's scores in GiB, the chunks, the blocks per call
@pytest.mark.parametrize("bh,nq,nk,d,scores,chunks,blocks", [
    (1, 2359296, 2359296, 16, 5.0625, (455, 2359296), 5186),  # 12288^2 decode's mid-block, tiny VAE
    (1, 4194304, 4194304, 16, 16, (255, 4194304), 16449),     # 16384^2 (the most px), tiny VAE
    (1, 4194304, 4194304, 512, 16, (255, 4194304), 16449),    # ... SDXL VAE
    (4, 1048576, 1048576, 16, 4, (255, 1048576), 4113),       # 16384^2 self-attention, tiny, CFG: the rows' bytes
    (32, 1048576, 1048576, 72, 32, (256, 131018), 36864),     # ... PixArt-Sigma XL, CFG: keys chunked
])
def test_beyond_max_tensor_the_least_workspace_is_the_capped_blocks(bh, nq, nk, d, scores, chunks, blocks):
    from studio.memory_plan import smallest_block, smallest_workspace
    assert bh * math.prod(smallest_block(nq, nk)) * 4 == scores * GiB
    least = smallest_workspace(bh, nq, nk, d)
    assert least == memory.attention_workspace(bh, *chunks, d) and bh * math.prod(chunks) * 4 <= memory.MAX_TENSOR
    for budget in (least, 2 * least, None):  # the same blocks at every budget from there up
        got = attention_chunks(bh, nq, nk, d, budget)
        assert got == AttentionChunks(*chunks) and -(-nq // got.q) * -(-nk // got.k) == blocks


def test_attention_chunks_impossible_budget():
    with pytest.raises(PlanError, match="needs at least"):
        attention_chunks(32, 4096, 4096, 72, 100)
    with pytest.raises(PlanError, match="needs at least 28 B of workspace; the budget gives 27 B$"):
        attention_chunks(1, 2, 7, 1, 27)  # one byte less than the 1 x 1 block head_dim 1 needs


def test_budget_context_nests():
    assert memory.current_attention_budget() is None
    with memory.attention_budget(5):
        with memory.attention_budget(7):
            assert memory.current_attention_budget() == 7
        assert memory.current_attention_budget() == 5
    assert memory.current_attention_budget() is None


@pytest.mark.parametrize("n,budget,rows", [
    (32400, None, 32400),  # 4K, CFG batch of 2: hidden 2 x 32400 x 4608 fp32 = 1.1 GiB, whole
    (129600, None, 116508),  # 8K: 4.45 GiB whole would exceed MAX_TENSOR; 4 GiB / (2 x 4608 x 4 B) rows
    (129600, 1 * GiB, 2912),  # the budget: 1 GiB / (2 x 4608 x MLP_BYTES_PER_HIDDEN)
])
def test_mlp_rows(n, budget, rows):
    assert memory.mlp_rows(n, 2 * 4 * 1152, budget) == rows


@pytest.mark.parametrize("n,down,up", [
    (0, "0 B", "0 B"), (1023, "1023 B", "1023 B"), (GiB, "1.00 GiB", "1.00 GiB"),
    (GiB + 1, "1.00 GiB", "1.01 GiB"), (int(33.776 * MiB), "33.78 MiB", "33.78 MiB"),
    (int(33.771 * MiB), "33.77 MiB", "33.78 MiB"), (1536 * KiB, "1.50 MiB", "1.50 MiB")])
def test_format_bytes(n, down, up):
    assert (format_bytes(n), format_bytes(n, up=True)) == (down, up)


@pytest.mark.parametrize("free,budget", [(24 * GiB, 23 * GiB), (2 * GiB, 1 * GiB), (1 * GiB, 512 * MiB),
                                         (100, 50)])
def test_auto_budget(free, budget):
    assert memory.auto_budget(free) == budget  # free minus 1 GiB, never below half of it


def test_automatic_budget_reads_the_device_in_use(monkeypatch, tiny_dir):
    import psutil

    from studio import backend, pipeline
    assert backend.on_cpu()
    before = psutil.virtual_memory().available
    free = backend.free_memory()
    assert abs(free - before) < 256 * MiB  # host RAM on the CPU
    monkeypatch.setattr(backend, "free_memory", lambda: 9 * GiB)
    assert pipeline.plan(tiny_dir, 256, 256).budget == 8 * GiB


@pytest.mark.parametrize("reported,expected", [(None, 24 * GiB - 2 * GiB), (10 * GiB, 10 * GiB + 9 * GiB)])
def test_a_devices_free_memory_counts_the_pools_idle_blocks_as_free(monkeypatch, reported, expected):
    """On GPU/Ascend: total less what tensors hold (2 GiB), the pool's other reserved blocks (9 GiB) being
    reused by tensors; and no more than the device reports free (other processes) plus those idle blocks."""
    import mindspore as ms

    from studio import backend
    properties = type("Properties", (), {"total_memory": 24 * GiB, "free_memory": reported})()
    monkeypatch.setattr(backend, "on_cpu", lambda: False)
    monkeypatch.setattr(ms.hal, "get_device_properties", lambda device_id: properties)
    monkeypatch.setattr(ms.runtime, "memory_allocated", lambda: 2 * GiB)
    monkeypatch.setattr(ms.runtime, "memory_reserved", lambda: 11 * GiB)
    assert backend.free_memory() == expected


def _count(cell) -> int:
    return sum(int(np.prod(p.shape)) for _, p in cell.parameters_and_names())


@pytest.mark.parametrize("overrides", [{}, {"use_additional_conditions": True, "num_attention_heads": 3,
                                            "cross_attention_dim": 48},
                                       {"norm_elementwise_affine": True}])
def test_parameter_counts_equal_the_models(overrides):
    """The memory plan's exact parameter counts, against the models built from the same configs."""
    from studio.memory_plan import t5_params, t5_streamed_params, transformer_params, vae_params
    from studio.models.t5 import T5Block, T5Config, T5EncoderModel
    from studio.models.transformer import PixArtTransformer2DModel, PixArtTransformerConfig
    from studio.models.vae import AutoencoderKL, AutoencoderKLConfig
    from studio.tiny import t5_config, transformer_config, vae_config
    tr = PixArtTransformerConfig.from_dict({**transformer_config(sample_size=32), **overrides})
    assert transformer_params(tr) == _count(PixArtTransformer2DModel(tr))
    t5 = T5Config.from_dict(t5_config())
    assert t5_params(t5) == _count(T5EncoderModel(t5))
    block = _count(T5Block(t5, False))
    bias_table = t5.relative_attention_num_buckets * t5.num_heads
    assert t5_streamed_params(t5) == 2 * block + bias_table + t5.d_model
    assert _count(T5Block(t5, True)) == block + bias_table
    vae = AutoencoderKLConfig.from_dict(vae_config())
    assert vae_params(vae) == _count(AutoencoderKL(vae))


def _configs(model: str) -> tuple:
    """(transformer, T5, VAE) configs: the tiny checkpoint's, or PixArt-Sigma XL's as published."""
    from studio.models.t5 import T5Config
    from studio.models.transformer import PixArtTransformerConfig
    from studio.models.vae import AutoencoderKLConfig
    from studio.tiny import t5_config, transformer_config, vae_config
    if model == "xl":
        from studio.plan import PUBLISHED, SDXL_VAE
        return PUBLISHED["PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"], T5Config(), SDXL_VAE
    tr = PixArtTransformerConfig.from_dict(transformer_config(sample_size=32, caption_channels=t5_config()["d_model"]))
    return tr, T5Config.from_dict(t5_config()), AutoencoderKLConfig.from_dict(vae_config())


@pytest.mark.parametrize("model,size,options,budget,message", [
    # the denoise phase (14.80 MiB) is short too, and was named, beside the decode's 35.67 MiB
    ("tiny", 1024, {}, 10 * MiB, "memory budget 10.00 MiB is too small for 1024x1024: the decode phase needs the "
     "most (weights 471.12 KiB + activations 31.16 MiB + attention); the smallest budget that works is 35.67 MiB"),
    ("tiny", 256, {"images": 4}, KiB, "memory budget 1.00 KiB is too small for 256x256: the text phase needs the "
     "most (weights 552.25 KiB + activations 5.27 MiB + attention); the smallest budget that works is 15.38 MiB"),
    # T5 kept loaded: the text phase (20.56 GiB) was named, beside the denoise's 20.86 GiB
    ("xl", 1024, {"keep_text_encoder": True}, KiB, "memory budget 1.00 KiB is too small for 1024x1024: the denoise "
     "phase needs the most (weights 20.33 GiB + activations 507.66 MiB + attention); the smallest budget that works "
     "is 20.86 GiB"),
])
def test_a_budget_too_small_names_the_phase_that_sets_the_smallest_budget(model, size, options, budget, message):
    """The phase named is the one whose least need is the smallest budget that works, and the error carries
    that budget in bytes (`minimum`), in which the generation plans."""
    from studio.memory_plan import plan_generation
    configs = _configs(model)
    with pytest.raises(PlanError, match=f"^{re.escape(message)}$") as e:
        plan_generation(*configs, size, size, budget=budget, **options)
    plan = plan_generation(*configs, size, size, budget=e.value.minimum, **options)
    assert e.value.minimum == plan.minimum and plan.peak <= e.value.minimum
    assert message.endswith(f"the smallest budget that works is {format_bytes(e.value.minimum, up=True)}")


def test_a_budget_too_small_for_an_untiled_decode_says_what_tiles_would_need():
    from studio.memory_plan import plan_generation
    configs = _configs("tiny")
    with pytest.raises(PlanError) as e:
        plan_generation(*configs, 256, 256, budget=10 * MiB, vae_tiling=False)
    m = re.fullmatch(r"memory budget 10\.00 MiB is too small for 256x256: the decode phase needs the most .*; the "
                     r"smallest budget that works is (.*); with tiled decoding \(vae_tiling None or True; the CLI's "
                     r"--vae-tiling auto or on\) it is (.*)", str(e.value))
    assert m and m[1] == format_bytes(e.value.minimum, up=True)
    tiled = plan_generation(*configs, 256, 256, budget=10 * MiB).minimum  # tiles: 10 MiB is enough
    assert m[2] == format_bytes(tiled, up=True) and tiled < 10 * MiB < e.value.minimum
    with pytest.raises(PlanError, match=r"the smallest budget that works is [0-9.]+ MiB$"):  # no hint: no tiles
        plan_generation(*configs, 256, 256, budget=KiB, vae_tiling=True)  # would do better



def test_latents_are_planned_without_the_decode_they_never_run():
    """output_type 'latent' returns before decoding: the smallest budget is the text's and the denoise's, not
    the decode's (3840x2160 on the tiny checkpoint: the decode's 259.72 MiB refused budgets the denoise fits)."""
    from studio.memory_plan import plan_generation
    configs = _configs("tiny")
    decoded = plan_generation(*configs, 2160, 3840)
    latent = plan_generation(*configs, 2160, 3840, output_type="latent")
    assert latent.minimum == max(p.minimum() for p in decoded.phases[:2]) < decoded.minimum
    assert decoded.phases[2].peak > 0 and latent.phases[2].peak == 0 and latent.phases[2].tiles is None
    plan = plan_generation(*configs, 2160, 3840, budget=latent.minimum, output_type="latent")
    assert plan.peak <= latent.minimum
    with pytest.raises(PlanError, match="the decode phase needs the most"):
        plan_generation(*configs, 2160, 3840, budget=latent.minimum)


def test_every_phase_leaves_the_resize_to_the_output_size_free():
    """Binning generates the tiny checkpoint's 8192^2 at its 1024^2 bin and resizes after decoding, which
    holds 1056 MiB for 'pil', 960 for 'np' (`binning.resize_bytes`; measured 1055 and 959). Numpy makes them
    on top of MindSpore's pool, which keeps every phase's high-water mark, so every phase leaves them free:
    its peak grows by them, its attention workspace shrinks by them, and so does the smallest budget."""
    from studio.memory_plan import plan_generation
    configs = _configs("tiny")
    for budget in (None, 2 * GiB):
        same = plan_generation(*configs, 1024, 1024, budget=budget)
        assert plan_generation(*configs, 1024, 1024, budget=budget, output=(1024, 1024)) == same
        assert plan_generation(*configs, 1024, 1024, budget=budget, output=(8192, 8192), output_type="latent") \
            == plan_generation(*configs, 1024, 1024, budget=budget, output_type="latent")
        for output_type, resize in (("pil", 1056 * MiB), ("np", 960 * MiB)):
            plan = plan_generation(*configs, 1024, 1024, budget=budget, output=(8192, 8192), output_type=output_type)
            assert plan.output == (8192, 8192) and plan.minimum == same.minimum + resize
            for p, q in zip(plan.phases, same.phases):
                assert p.resize == resize and p.minimum() == q.minimum() + resize
                if budget is None:
                    assert p.peak == q.peak + resize
                else:
                    assert p.workspace == q.workspace - resize and p.peak <= budget


def test_the_plan_shows_and_checks_the_output_size(tiny_dir):
    """`studio generate --size 2048x2048 --dry-run` on a 256 px checkpoint: the output size beside the
    generation size, the resize's bytes in every phase (BLAS 32 MiB, matrices 4, the float image 48, its
    pixels 12: `binning.resize_bytes`), and a budget too small for them refused with the one that works."""
    from studio import pipeline
    with pytest.raises(PlanError, match=re.escape(
            "memory budget 64.00 MiB is too small for 256x256: the decode phase needs the most (weights 471.12 KiB "
            "+ activations 7.97 MiB + the resize to 2048x2048 96.00 MiB + attention); the smallest budget that "
            "works is 105.45 MiB")) as e:
        pipeline.plan(tiny_dir, 2048, 2048, memory_budget="64MiB", dtype="float32")
    plan = pipeline.plan(tiny_dir, 2048, 2048, memory_budget=e.value.minimum, dtype="float32")
    lines = plan.describe().splitlines()
    assert lines[0] == ("generation 256x256 px, output 2048x2048 px (resized after decoding), 1 image(s), "
                        "memory budget 105.44 MiB")
    assert lines[1].split() == ["phase", "weights", "activations", "resize", "attention", "peak", "chunks"]
    assert [line.split()[5:7] for line in lines[2:5]] == [["96.00", "MiB"]] * 3
    assert plan.phases[2].resize == 96 * MiB and plan.peak <= e.value.minimum
    native = pipeline.plan(tiny_dir, 256, 256, memory_budget="1GiB", dtype="float32").describe().splitlines()
    assert native[0] == "generation 256x256 px, 1 image(s), memory budget 1.00 GiB" and "resize" not in native[1]

@pytest.mark.parametrize("itemsize,streamed,expected", [
    # T5-XXL: 4,762,310,656 parameters, 1,006,632,960 of them the 24 blocks' `wo`, fp32 in every dtype
    (4, False, 19_049_242_624),  # 17.74 GiB
    (2, False, 11_537_887_232),  # 10.75 GiB (8.87 GiB if `wo` were fp16 too)
    (4, True, 1_543_593_984),  # two blocks, the bias table, the final norm
    (2, True, 939_569_152),
])
def test_t5_weight_bytes_of_xxl(itemsize, streamed, expected):
    from studio.memory_plan import t5_bytes
    from studio.models.t5 import T5Config
    assert t5_bytes(T5Config(), itemsize, streamed) == expected


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_t5_weight_bytes_equal_the_loaded_encoders(tiny_dir, dtype):
    """The plan's T5 weights, in bytes, are those of the parameters as loaded (in fp16 each block's `wo` stays
    fp32), whole and as the streamed encoder holds them."""
    import mindspore as ms

    from studio.memory_plan import t5_bytes
    from studio.models.t5 import T5Block, T5EncoderModel, T5LayerNorm

    def nbytes(*cells):
        return sum(p.nbytes for cell in cells for _, p in cell.parameters_and_names())
    ms_dtype, itemsize = getattr(ms, dtype), 2 if dtype == "float16" else 4
    model = T5EncoderModel.from_pretrained(tiny_dir / "text_encoder", ms_dtype)
    c = model.config
    assert t5_bytes(c, itemsize) == nbytes(model)
    bias_table = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    held = [T5Block(c, False, ms_dtype), T5Block(c, False, ms_dtype), bias_table,
            T5LayerNorm(c.d_model, c.layer_norm_epsilon, ms_dtype)]
    assert t5_bytes(c, itemsize, streamed=True) == nbytes(*held)


def test_the_vaes_largest_map_is_capped_in_its_dtype_where_a_cap_is_given():
    """At 3840x2160 the SDXL VAE's largest map (256 channels at full size) takes 7.91 GiB in fp32, above
    MAX_TENSOR, and 3.96 GiB in fp16: under the CPU's cap an fp16 VAE decodes untiled where an fp32 one, or
    one upcast (force_upcast), tiles; without a cap (GPU/Ascend) the budget alone decides, fp32 too."""
    from dataclasses import replace

    from studio.memory_plan import plan_generation
    from studio.plan import SDXL_VAE
    from studio.vae_tiling import largest_decode_tensor
    tr, t5, _ = _configs("tiny")
    assert largest_decode_tensor(SDXL_VAE, 2160, 3840, 2) <= memory.MAX_TENSOR < \
        largest_decode_tensor(SDXL_VAE, 2160, 3840, 4)

    def tiled(vae=SDXL_VAE, **options):
        return plan_generation(tr, t5, vae, 2160, 3840, budget=1024 * GiB, **options).phases[2].tiles is not None
    assert tiled() and tiled(itemsize=4, max_tensor=memory.MAX_TENSOR)  # the cap is MAX_TENSOR by default
    assert not tiled(itemsize=2)
    assert tiled(replace(SDXL_VAE, force_upcast=True), itemsize=2)
    assert not tiled(max_tensor=None) and not tiled(itemsize=2, max_tensor=None)
    assert tiled(max_tensor=None, vae_tiling=True)
    with pytest.raises(PlanError, match=r"^an untiled decode of 3840x2160 makes a 7\.91 GiB feature map, more than "
                                        r"MindSpore allocates in one tensor \(4\.00 GiB\); let it tile"):
        plan_generation(tr, t5, SDXL_VAE, 2160, 3840, budget=1024 * GiB, vae_tiling=False)
    for options in ({"itemsize": 2}, {"max_tensor": None}):
        assert not tiled(vae_tiling=False, **options)


def test_only_the_cpu_caps_a_single_tensor(monkeypatch):
    from studio import backend
    assert backend.on_cpu() and memory.tensor_cap() == memory.MAX_TENSOR
    monkeypatch.setattr(backend, "on_cpu", lambda: False)
    assert memory.tensor_cap() is None


def test_the_pipelines_plan_caps_a_tensor_on_the_cpu_only(tiny_dir, monkeypatch):
    """`pipeline.plan` takes the device's cap: the tiny VAE's largest map at 16384^2 (8 channels at full size)
    is 8 GiB in fp32, which tiles on the CPU and not where no cap holds."""
    from studio import backend, pipeline

    def tiles():
        return pipeline.plan(tiny_dir, 16384, 16384, memory_budget="1024GiB", use_resolution_binning=False,
                             dtype="float32").phases[2].tiles
    assert tiles() is not None
    monkeypatch.setattr(backend, "on_cpu", lambda: False)
    assert tiles() is None


def _resident() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * KiB for line in f if line.startswith("VmRSS:"))


def test_freed_weight_sized_blocks_are_given_back_to_the_system():
    """glibc keeps freed blocks below its mmap threshold (raised to 30 MiB here by freeing a mapped block of that
    size, as freeing a model's larger tensors does) in its heap, resident; give_back_memory returns them, so a
    released model's weights don't count while the next one loads."""
    from studio import backend

    if backend._malloc_trim() is None:
        pytest.skip("no glibc malloc_trim on this system")
    np.ones(30 * MiB, np.uint8)  # mapped, then freed: the threshold rises to its size (unless it is above it)
    blocks = [np.ones(5 * MiB, np.uint8) for _ in range(80)]  # from the heap, resident
    del blocks[::2]  # 200 MiB freed between blocks still held: no top of the heap, which free() trims itself
    freed = _resident()
    backend.give_back_memory()
    assert freed - _resident() > 150 * MiB
    del blocks
