"""Geometry and planner: exact integer tables."""

import json
import re
from fractions import Fraction

import numpy as np
import pytest

from studio.errors import InputError, PlanError
from studio.geometry import Box, edge, fit_box, percent, resolve, span_canvas, split
from studio.models.t5 import T5Config
from studio.models.transformer import PixArtTransformerConfig
from studio.models.vae import AutoencoderKLConfig
from studio.memory import attention_chunks, format_bytes
from studio.plan import choose_generation, plan_layout, relative_cost
from studio.tiny import vae_config
from studio.spec import Canvas, FillLayer, GenerateLayer, Grid, Layout, Monitor, Region, Span, TextLayer


@pytest.mark.parametrize("total,parts,gutter,expected", [
    (100, 3, 0, [(0, 33), (33, 34), (67, 33)]),
    (3840, 3, 40, [(0, 1253), (1293, 1254), (2587, 1253)]),
    (7, 7, 0, [(i, 1) for i in range(7)]),
    (10, 2, 1, [(0, 4), (5, 5)]),
    (1, 1, 0, [(0, 1)]),
])
def test_split_is_exact(total, parts, gutter, expected):
    cells = split(total, parts, gutter)
    assert cells == expected
    assert cells[-1][0] + cells[-1][1] == total
    assert sum(length for _, length in cells) + gutter * (parts - 1) == total


def test_split_impossible():
    with pytest.raises(ValueError):
        split(10, 4, 3)


@pytest.mark.parametrize("total,gutter,weights,expected", [
    (1000, 10, (1, 2, 1), [(0, 245), (255, 490), (755, 245)]),
    (100, 0, (1, 1, 1), [(0, 33), (33, 34), (67, 33)]),  # equal weights: as no weights
    (10, 0, (0.5, 0.25, 0.25), [(0, 5), (5, 3), (8, 2)]),  # edges at 5, 7.5 -> 8 (half to even), 10
    (2160, 20, (3, 1), [(0, 1605), (1625, 535)]),
    (1000, 0, (0.0000004, 0.0000012), [(0, 250), (250, 750)]),  # 1:3 however small, not 0:1 (nor 0:0)
    (1000, 0, (1e-300, 3e-300), [(0, 250), (250, 750)]),
    (100, 0, (0.1, 0.3), [(0, 25), (25, 75)]),  # as the decimals say, not as the nearest binary floats
])
def test_split_by_weights_is_exact(total, gutter, weights, expected):
    cells = split(total, len(weights), gutter, weights)
    assert cells == expected
    assert sum(length for _, length in cells) + gutter * (len(weights) - 1) == total


def test_split_by_weights_refuses_a_part_under_a_pixel():
    with pytest.raises(ValueError, match="into parts of 1, 0.001"):
        split(100, 2, 0, (1, 0.001))
    with pytest.raises(ValueError, match="into parts of 1e-300, 1 with 0 px gutters"):
        split(100, 2, 0, (1e-300, 1))


CANVAS = Canvas(width=3840, height=2160, bleed=0, safe_margin=100)
BLEED = Canvas(width=4960, height=7016, dpi=300, bleed=36, safe_margin=118)
GRIDS = {"panels": Grid("panels", rows=1, columns=3, gutter=40),
         "inner": Grid("inner", rows=2, columns=2, gutter=10, region=Region("px", 100, 100, 1000, 500))}


@pytest.mark.parametrize("canvas,region,expected", [
    (CANVAS, Region("full"), Box(0, 0, 3840, 2160)),
    (CANVAS, Region("safe"), Box(100, 100, 3640, 1960)),
    (CANVAS, Region("px", 10, 20, 300, 400), Box(10, 20, 300, 400)),
    (CANVAS, Region("percent", 10, 5, 80, 20), Box(384, 108, 3072, 432)),
    (CANVAS, Region("percent", 33.3, 0, 33.4, 100), Box(1279, 0, 1282, 2160)),
    (CANVAS, Region("cell", grid="panels", column=0), Box(0, 0, 1253, 2160)),
    (CANVAS, Region("cell", grid="panels", column=1), Box(1293, 0, 1254, 2160)),
    (CANVAS, Region("cell", grid="panels", column=1, column_span=2), Box(1293, 0, 2547, 2160)),
    (CANVAS, Region("cell", grid="inner", row=1, column=1), Box(605, 355, 495, 245)),
    (BLEED, Region("full"), Box(0, 0, 5032, 7088)),
    (BLEED, Region("safe"), Box(154, 154, 4724, 6780)),
    (BLEED, Region("px", 0, 0, 100, 100), Box(36, 36, 100, 100)),
    (BLEED, Region("percent", 0, 0, 100, 100), Box(36, 36, 4960, 7016)),
])
def test_resolve(canvas, region, expected):
    assert resolve(region, canvas, GRIDS) == expected



@pytest.mark.parametrize("p, size, px", [(6.2, 1179, Fraction(36549, 500)), (43.8, 1179, Fraction(258201, 500)),
                                         (50, 1179, Fraction(1179, 2)), (33.333333, 3, Fraction(99999999, 10 ** 8))])
def test_percent_is_exact(p, size, px):
    assert percent(p, size) == px


def test_numpy_floats_are_taken_exactly():
    """Fraction refuses a numpy float: percentages, a monitor's mm and bezels take it as the float it is."""
    assert percent(np.float32(10), 200) == percent(np.float64(10), 200) == 20
    monitors = (Monitor("l", 100, 60, 200, 120), Monitor("r", 100, 60, 200, 120))
    numpy = Span((Monitor("l", 100, 60, np.float32(200), np.float64(120)), monitors[1]), (np.float32(10),))
    assert span_canvas(numpy) == span_canvas(Span(monitors, (10,)))


@pytest.mark.parametrize("src,box,fit,expected", [
    ((1344, 768), Box(0, 0, 3840, 2160), "cover", (3840, 2194, Box(0, 0, 3840, 2160))),
    ((1344, 768), Box(0, 0, 3840, 2160), "contain", (3780, 2160, Box(30, 0, 3780, 2160))),
    ((100, 100), Box(10, 10, 50, 20), "contain", (20, 20, Box(25, 10, 20, 20))),
    ((100, 100), Box(10, 10, 50, 20), "cover", (50, 50, Box(10, 10, 50, 20))),
])
def test_fit_box(src, box, fit, expected):
    assert fit_box(*src, box, fit) == expected


def test_span_with_bezels_is_exact():
    m = Monitor("m", 2560, 1440, 597, 336)
    width, height, boxes = span_canvas(Span((m, m, m), (20, 20)))
    # 1831 mm x 2560/597 px/mm = 7851.52 px; pixels are square, so the measured 336 mm (1440.80 px) gives way
    # to 597 mm x 1440/2560 = 335.81 mm: exactly 1440 px, and each monitor's cut is its own pixels, 1:1
    assert (width, height) == (7852, 1440)
    assert boxes == [Box(0, 0, 2560, 1440), Box(2646, 0, 2560, 1440), Box(5292, 0, 2560, 1440)]
    # the gaps are the bezels at the canvas density: 20 mm * 2560 / 597 = 85.76 px
    assert [b.x - a.right for a, b in zip(boxes, boxes[1:])] == [86, 86]


def test_span_mixed_monitors_centered():
    big, small = Monitor("big", 3840, 2160, 597, 336), Monitor("small", 1920, 1080, 477, 268)
    width, height, boxes = span_canvas(Span((small, big, small), (15, 15), align="center"))
    # density of the big one: 3840 / 597 px per mm
    assert (width, height) == (10169, 2160)  # 1581 mm x 3840/597; 597 mm x 2160/3840 = 335.81 mm high
    # the small ones: 477 mm x 3840/597 = 3068.14 px wide, 477 x 1080/1920 = 268.31 mm = 1725.83 px high,
    # centred: (335.81 - 268.31) / 2 mm = 217.09 px down
    assert boxes == [Box(0, 217, 3068, 1726), Box(3165, 0, 3840, 2160), Box(7101, 217, 3068, 1726)]
    assert boxes[2].right == width


def test_span_boxes_are_whole_pixels_from_half_pixel_offsets():
    """A box whose left edge lands on a half pixel keeps its size (edges rounded apart would not: round(0.5)
    is 0 but round(3.5) is 4)."""
    m = Monitor("m", 3, 2, 3, 2)  # 1 px per mm
    width, height, boxes = span_canvas(Span((m, m), (0.5,)))
    assert (width, height) == (7, 2) and boxes == [Box(0, 0, 3, 2), Box(4, 0, 3, 2)]


def test_span_monitors_without_bezels_meet_in_pixels():
    """Edges are rounded, not sizes: 100.15 mm at 4 px/mm is 400.6 px, and monitors from 1000 px on end at
    1400.6, 1801.2 and 2201.8 px; rounding sizes (401 each) overlapped the second and third by a column."""
    wide, narrow = Monitor("a", 1000, 500, 250, 125), Monitor("b", 300, 300, 100.15, 1)
    width, height, boxes = span_canvas(Span((wide, narrow, narrow, narrow), (0, 0, 0)))
    assert [(b.x, b.right) for b in boxes] == [(0, 1000), (1000, 1401), (1401, 1801), (1801, 2202)]
    assert (width, height) == (2202, 500)


@pytest.mark.parametrize("region, box", [
    (Region("px", 0, 0, 1169.29, 10), Box(0, 0, 1169, 10)),
    (Region("px", 1169.29, 0, 1169.29, 10), Box(1169, 0, 1170, 10)),  # meets the first: 99 mm panels at 300 dpi
    (Region("px", 2338.58, 0, 1169.29, 10), Box(2339, 0, 1169, 10)),
])
def test_px_regions_round_their_edges_so_neighbours_meet(region, box):
    assert resolve(region, CANVAS, GRIDS) == box


@pytest.mark.parametrize("canvas, region, box", [
    (Canvas(1179, 10), Region("px", Fraction(1179, 2), 0, 1, 10), Box(590, 0, 1, 10)),  # x: 50%: 589.5 -> 590, 591
    (Canvas(1179, 10), Region("px", Fraction(1179, 2), 0, 99, 10), Box(590, 0, 99, 10)),  # 688.5 -> 689
    (Canvas(1179, 10), Region("px", Fraction(1179, 2), 0, 100, 10), Box(590, 0, 100, 10)),  # 689.5 -> 690
    (Canvas(20, 4), Region("percent", 7.5, 0, 5, 100), Box(2, 0, 1, 4)),  # 1.5, 2.5 -> 2, 3
    (Canvas(20, 4), Region("percent", 12.5, 0, 5, 100), Box(3, 0, 1, 4)),  # 2.5, 3.5 -> 3, 4
    (Canvas(8, 6), Region("px", 1.5, 2.5, 1, 2), Box(2, 3, 1, 2)),
])
def test_edges_round_half_up_so_whole_pixel_boxes_keep_their_size(canvas, region, box):
    """Half to even made 1 px at 589.5 px none, 99 px 98, and two 1 px columns at 1.5 and 2.5 px 0 and 2 px."""
    assert resolve(region, canvas, {}) == box


@pytest.mark.parametrize("e, px", [
    (0.5, 1), (1.5, 2), (2.5, 3), (Fraction(5, 2), 3), (np.float32(2.5), 3), (np.int64(3), 3), (-0.5, 0),
    (0.49999999999999994, 0),  # the float below a half: float + 0.5 would be 1.0
    (-0.6, -1), (10.5, 11), (10.6, 11),  # more than half a pixel into the bleed: outward
])
def test_edge_rounds_halves_up_exactly(e, px):
    assert edge(e, 10) == px


TINY = PixArtTransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, caption_channels=32,
                               cross_attention_dim=32, sample_size=128)
TINY_VAE = AutoencoderKLConfig.from_dict(vae_config())  # downsample factor 8


@pytest.mark.parametrize("w,h,strategy,expected", [
    (3840, 2160, "auto", ("upscale", 1344, 768)),
    (1080, 2400, "auto", ("upscale", 704, 1472)),
    (1024, 1024, "auto", ("direct", 1024, 1024)),
    (1000, 700, "auto", ("direct", 1008, 704)),
    (1536, 1536, "auto", ("direct", 1536, 1536)),     # 2.25x the native area: still direct
    (1552, 1536, "auto", ("upscale", 1024, 1024)),
    (3840, 2160, "direct", ("direct", 3840, 2160)),
    (1000, 700, "upscale", ("upscale", 1216, 832)),
    # direct rounds each side up, so the generation covers the region (nearest would give 1008x1008: 2 px short)
    (1010, 1000, "direct", ("direct", 1024, 1008)),
    (40, 20, "auto", ("upscale", 1408, 704)),  # far below the native size: the nearest bin, resampled down
    (40, 20, "direct", ("direct", 48, 32)),
    (3, 3, "direct", ("direct", 16, 16)),  # a few px: the smallest generation
    (512, 512, "auto", ("direct", 512, 512)),  # a quarter of the native pixels: still direct
    (496, 512, "auto", ("upscale", 1024, 1024)),
    (8192, 64, "auto", ("direct", 8192, 64)),  # 0.5x the native area
    (8192, 65, "auto", ("direct", 8192, 80)),
    (8192, 64, "upscale", ("upscale", 2048, 512)),  # the widest bin; compose covers the strip from it
])
def test_choose_generation(w, h, strategy, expected):
    assert choose_generation(w, h, TINY, TINY_VAE, strategy) == expected


def test_plan_layout_table():
    t5 = T5Config(vocab_size=356, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    layout = Layout("mem.yaml", CANVAS, (
        FillLayer((0, 0, 0, 255)),
        GenerateLayer("a", region=Region("cell", grid="panels", column=0)),
        GenerateLayer("b", region=Region("full"), strategy="direct", steps=10),
        TextLayer("hello", region=Region("percent", 10, 70, 80, 20), name="caption"),
    ), grids=GRIDS)
    vae = AutoencoderKLConfig.from_dict(vae_config())
    plan = plan_layout(layout, budget="4GiB", configs=(TINY, t5, vae))
    assert "  [3] text      3072x432 at (384, 1512) (caption)" in plan.describe().splitlines()
    assert (plan.width, plan.height, plan.budget) == (3840, 2160, 4 * 2 ** 30)
    assert plan.boxes[3] == Box(384, 1512, 3072, 432)
    a, b = plan.jobs
    assert (a.layer, a.strategy, a.gen_width, a.gen_height, a.latent, a.tokens) == (1, "upscale", 768, 1344, (168, 96), 4032)
    assert (b.layer, b.strategy, b.gen_width, b.gen_height, b.latent, b.tokens) == (2, "direct", 3840, 2160, (270, 480), 32400)
    assert b.memory.peak <= 4 * 2 ** 30
    # cost: tokens x (24 D^2 + 4 N D) per pass, D = 32, against 4096 tokens at 20 steps; b runs 10 steps
    assert a.cost == round(4032 * (24 * 32 ** 2 + 4 * 4032 * 32) / (4096 * (24 * 32 ** 2 + 4 * 4096 * 32)), 4)
    assert b.cost == round(32400 * (24 * 32 ** 2 + 4 * 32400 * 32) / (4096 * (24 * 32 ** 2 + 4 * 4096 * 32)) / 2, 4)
    # the text output names each phase's chunking, as the memory plan decided it
    self_attention = attention_chunks(2 * 2, 32400, 32400, 16, b.memory.phases[1].workspace)
    assert self_attention.mode(32400, 32400) == "query-chunked"
    text = plan.describe()
    # cross-attention runs in self-attention's row blocks, against at most 300 caption tokens
    assert (f"      denoise: self: query-chunked q={self_attention.q} k=32400; cross: query-chunked "
            f"q={self_attention.q} k<=300" in text.splitlines())
    assert json.loads(plan.to_json())["jobs"][1]["memory"]["denoise"]["chunking"] == b.memory.phases[1].chunking()


@pytest.mark.parametrize("size,steps,guidance,cost", [
    (1024, 20, True, 1.0), (1024, 10, True, 0.5), (1024, 20, False, 0.5), (1024, 50, True, 2.5),
    (2048, 20, True, 16384 * (24 * 32 ** 2 + 4 * 16384 * 32) / (4096 * (24 * 32 ** 2 + 4 * 4096 * 32))),
])
def test_relative_cost(size, steps, guidance, cost):
    assert relative_cost(TINY, size, size, steps, guidance) == pytest.approx(cost, rel=1e-12)


def test_plan_names_vae_tiles():
    t5 = T5Config(vocab_size=356, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    layout = Layout("tiles.yaml", CANVAS, (GenerateLayer("b", region=Region("full"), strategy="direct"),))
    plan = plan_layout(layout, budget="300MiB", configs=(TINY, t5, AutoencoderKLConfig.from_dict(vae_config())))
    tiles = plan.jobs[0].memory.phases[2].tiles
    assert tiles is not None and "      decode: vae-mid: " in plan.describe()
    assert f"vae: {tiles.describe()}" in plan.describe()
    assert json.loads(plan.to_json())["jobs"][0]["memory"]["decode"]["vae_tiles"] == tiles.describe()


def _smallest(message: str) -> str:
    return re.search(r"the smallest budget that works is (.+)$", message)[1]


def test_a_budget_too_small_names_the_least_that_works_for_the_layer():
    """A region smaller than the native bin: upscaling would generate more pixels, so the error is about the
    region's own size; a region larger than the bin, when both fail: about the bin, the smaller need."""
    t5 = T5Config(vocab_size=356, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    configs = (TINY, t5, AutoencoderKLConfig.from_dict(vae_config()))
    small = Layout("small.yaml", Canvas(256, 256), (GenerateLayer("a"),))
    too_small = r"^{}.yaml: layers\[0\]: memory budget 1.00 KiB is too small for {}: "
    with pytest.raises(PlanError, match=too_small.format("small", "256x256")) as e:
        plan_layout(small, budget="1KiB", configs=configs)
    job = plan_layout(small, budget=_smallest(str(e.value)), configs=configs).jobs[0]
    assert (job.strategy, job.gen_width, job.gen_height) == ("direct", 256, 256)

    large = Layout("large.yaml", Canvas(1400, 1000), (GenerateLayer("a"),))  # auto: direct, 1.3x the bin
    assert choose_generation(1400, 1000, TINY, TINY_VAE, "auto") == ("direct", 1408, 1008)
    assert choose_generation(1400, 1000, TINY, TINY_VAE, "upscale") == ("upscale", 1152, 832)
    with pytest.raises(PlanError, match=too_small.format("large", "1152x832")) as e:
        plan_layout(large, budget="1KiB", configs=configs)
    job = plan_layout(large, budget=_smallest(str(e.value)), configs=configs).jobs[0]
    assert (job.strategy, job.gen_width, job.gen_height) == ("upscale", 1152, 832)
    assert e.value.minimum == job.memory.minimum  # the error's minimum: bytes, the layer's smallest budget


def _squares(*layers) -> Layout:
    """A layout of generate layers (side px, strategy, name), each a square at the top left of a 4000 px canvas."""
    return Layout("squares.yaml", Canvas(4000, 4000), tuple(
        GenerateLayer(f"p{i}", region=Region("px", 0, 0, side, side), strategy=strategy, name=name)
        for i, (side, strategy, name) in enumerate(layers)))


def test_a_layouts_budget_too_small_names_what_all_its_layers_need():
    """Every layer the budget can't plan is planned first: the error names each one's need, the largest first
    (three at most), and the smallest budget for the whole layout, the largest need, which then plans every
    layer. Only the layer that needs more than the first one did was named before: 35.69 MiB, which then
    failed on layers[1] (70.63 MiB)."""
    configs = (TINY, T5_TINY, AutoencoderKLConfig.from_dict(vae_config()))
    # 1536 px auto: direct (2.25x the native area) when the budget takes it, else upscale at the 1024 px bin
    two = _squares((1024, "auto", ""), (1536, "direct", "big"), (1536, "auto", ""))
    with pytest.raises(PlanError) as e:
        plan_layout(two, budget="10MiB", configs=configs)
    assert str(e.value) == ("squares.yaml: memory budget 10.00 MiB is too small for 3 generate layers: layers[1] "
                            "(big) needs 70.63 MiB, layers[0] 35.69 MiB, layers[2] 35.69 MiB; the smallest budget "
                            "that works is 70.63 MiB")
    assert e.value.minimum == 74053077 and format_bytes(e.value.minimum, up=True) == "70.63 MiB"
    for budget in (e.value.minimum, _smallest(str(e.value))):  # exactly, and as printed
        plan = plan_layout(two, budget=budget, configs=configs)
        assert [(j.layer, j.strategy, j.gen_width, j.gen_height) for j in plan.jobs] == [
            (0, "direct", 1024, 1024), (1, "direct", 1536, 1536), (2, "direct", 1536, 1536)]
        assert plan.peak <= plan.budget
    # at the first layer's need, layers[2] plans by upscaling: only layers[1] is short, in its own words
    with pytest.raises(PlanError) as short:
        plan_layout(two, budget="35.69MiB", configs=configs)
    assert str(short.value) == ("squares.yaml: layers[1] (big): memory budget 35.69 MiB is too small for "
                                "1536x1536: the decode phase needs the most (weights 492.06 KiB + activations "
                                "61.04 MiB + attention); the smallest budget that works is 70.63 MiB")
    assert short.value.minimum == e.value.minimum
    without_big = _squares((1024, "auto", ""), (1536, "auto", ""))
    assert [(j.strategy, j.gen_width) for j in plan_layout(without_big, budget="35.69MiB", configs=configs).jobs] == [
        ("direct", 1024), ("upscale", 1024)]
    with pytest.raises(PlanError, match=r"^squares.yaml: layers\[1\] \(big\): memory budget 70.62 MiB is too small "):
        plan_layout(two, budget=e.value.minimum - 1, configs=configs)

    five = _squares((1024, "auto", ""), (1536, "direct", "big"), (1536, "auto", ""), (512, "direct", ""),
                    (768, "direct", "mid"))
    with pytest.raises(PlanError) as e:
        plan_layout(five, budget="1KiB", configs=configs)
    assert str(e.value) == ("squares.yaml: memory budget 1.00 KiB is too small for 5 generate layers: layers[1] "
                            "(big) needs 70.63 MiB, layers[0] 35.69 MiB, layers[2] 35.69 MiB and 2 more, each at "
                            "most 23.46 MiB; the smallest budget that works is 70.63 MiB")
    assert len(plan_layout(five, budget=_smallest(str(e.value)), configs=configs).jobs) == 5


# generate layers as in the squares above: layers[1] needs 70.63 MiB, the others 35.69 MiB each; an anchor,
# a merge key (layers[1], written at line 6), an alias (layers[3], at line 13, its anchor at 11), and variables
SQUARES_FILE = """\
variables: {budget: 10MiB, subject: fox}
canvas: {width: 4000px, height: 4000px}
memory_budget: "{budget}"
layers:
  - generate: &square {prompt: "{subject}", region: {x: 0px, y: 0px, w: 1024px, h: 1024px}}
  - generate:
      <<: *square
      strategy: direct
      region: {x: 0px, y: 0px, w: 1536px, h: 1536px}
      name: big
  - &again
    generate: {prompt: owl, region: {x: 0px, y: 0px, w: 1024px, h: 1024px}}
  - *again
"""


def test_a_budget_too_small_for_a_file_names_the_line():
    """A message that starts with a key path has that key's line: a layer's is where the layer is written in
    `layers` (merged, or an alias, too). The one for several layers starts with the budget: at the file's
    memory_budget line when the file's budget is the one used (a variable's value too), else at the layer that
    needs the most, named first. A layout built in code has no lines: the file alone, as before."""
    from studio.layout import parse_layout
    configs = (TINY, T5_TINY, AutoencoderKLConfig.from_dict(vae_config()))
    one = parse_layout("canvas: {width: 256px, height: 256px}\nmemory_budget: 1KiB\nlayers:\n"
                       "  - generate: {prompt: x}\n", "b.yaml")
    with pytest.raises(PlanError) as e:
        plan_layout(one, configs=configs)
    assert str(e.value) == ("b.yaml:4: layers[0]: memory budget 1.00 KiB is too small for 256x256: the decode "
                            "phase needs the most (weights 492.06 KiB + activations 7.97 MiB + attention); the "
                            "smallest budget that works is 9.47 MiB")

    layout = parse_layout(SQUARES_FILE, "b.yaml")
    with pytest.raises(PlanError) as e:
        plan_layout(layout, configs=configs)
    assert str(e.value) == ("b.yaml:3: memory budget 10.00 MiB is too small for 4 generate layers: layers[1] (big) "
                            "needs 70.63 MiB, layers[0] 35.69 MiB, layers[2] 35.69 MiB and 1 more, each at most "
                            "35.69 MiB; the smallest budget that works is 70.63 MiB")
    with pytest.raises(PlanError) as e:
        plan_layout(layout, budget="1KiB", configs=configs)  # the command line's budget
    assert str(e.value).startswith("b.yaml:6: memory budget 1.00 KiB is too small for 4 generate layers: layers[1] "
                                   "(big) needs 70.63 MiB, ")
    with pytest.raises(PlanError) as e:
        plan_layout(parse_layout(SQUARES_FILE, "b.yaml", {"budget": "35.69MiB"}), configs=configs)
    assert str(e.value) == ("b.yaml:6: layers[1] (big): memory budget 35.69 MiB is too small for 1536x1536: the "
                            "decode phase needs the most (weights 492.06 KiB + activations 61.04 MiB + attention); "
                            "the smallest budget that works is 70.63 MiB")
    assert e.value.minimum == 74053077
    assert [layout.where(f"layers[{i}]") for i in range(4)] == ["b.yaml:5", "b.yaml:6", "b.yaml:11", "b.yaml:13"]

    in_code = _squares((1024, "auto", ""), (1536, "direct", "big"))
    assert in_code.where("layers[0]") == "squares.yaml"
    with pytest.raises(PlanError, match=r"^squares.yaml: memory budget 1.00 KiB is too small for 2 generate "):
        plan_layout(in_code, budget="1KiB", configs=configs)


def test_a_model_the_file_names_that_cannot_be_read_is_at_its_key(tiny_dir, tmp_path, monkeypatch):
    """The layout's model at the `model:` line, a layer's at the layer's `model:` line (the loader's path for
    it); a model from the command line is no key of the file's: its error is as it was."""
    from studio.errors import CheckpointError
    from studio.layout import parse_layout
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = "nobody/nothing-here: not a local folder, not in the Hugging Face cache, and could not be downloaded"

    def plan(text, model=None):
        return plan_layout(parse_layout(text, "c.yaml", base_dir=tmp_path), model, "1GiB")

    layers = "layers:\n  - generate: {prompt: a}\n  - generate:\n      prompt: b\n      name: owl\n"
    with pytest.raises(CheckpointError, match=f"^c.yaml:2: model: {missing}"):
        plan("canvas: {width: 64px, height: 64px}\nmodel: nobody/nothing-here\n" + layers, str(tiny_dir))
    with pytest.raises(CheckpointError, match=f"^c.yaml:7: layers\\[1\\] \\(owl\\).generate.model: {missing}"):
        plan("canvas: {width: 64px, height: 64px}\n" + layers + "      model: nobody/nothing-here\n", str(tiny_dir))
    with pytest.raises(CheckpointError, match=f"^{missing}"):
        plan("canvas: {width: 64px, height: 64px}\n" + layers, "nobody/nothing-here")


NO_BINS = PixArtTransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, caption_channels=32,
                                  cross_attention_dim=32, sample_size=96)  # 768 px: no aspect-ratio bin table
UPSCALE_WITHOUT_BINS = ("`strategy: upscale` generates at the model's aspect-ratio bins, and a transformer of "
                        "sample_size 96 has none (there are bins for sample_size 32, 64, 128, 256); give the layer "
                        "`strategy: direct`")


@pytest.mark.parametrize("w,h,strategy,expected", [
    (3840, 2160, "auto", ("direct", 3840, 2160)),  # 14x the native area: upscale, had the model bins
    (1000, 700, "auto", ("direct", 1008, 704)),
    (40, 20, "auto", ("direct", 48, 32)),
    (40, 20, "direct", ("direct", 48, 32)),
])
def test_a_model_without_bins_generates_directly(w, h, strategy, expected):
    assert choose_generation(w, h, NO_BINS, TINY_VAE, strategy) == expected


def test_a_model_without_bins_cannot_upscale():
    from studio.errors import ConfigError
    with pytest.raises(ConfigError, match=f"^{re.escape(UPSCALE_WITHOUT_BINS)}$"):
        choose_generation(1000, 700, NO_BINS, TINY_VAE, "upscale")
    configs = (NO_BINS, T5_TINY, AutoencoderKLConfig.from_dict(vae_config()))
    layout = Layout("bins.yaml", CANVAS, (GenerateLayer("a"), GenerateLayer("b", strategy="upscale", name="sky")))
    with pytest.raises(ConfigError, match=f"^bins.yaml: layers\\[1\\] \\(sky\\).generate.strategy: {re.escape(UPSCALE_WITHOUT_BINS)}$"):
        plan_layout(layout, budget="1GiB", configs=configs)
    # auto: direct; a budget too small for it names direct's need (there is no other way to try)
    auto = Layout("bins.yaml", CANVAS, (GenerateLayer("a", name="sky"),))
    [job] = plan_layout(auto, budget="1GiB", configs=configs).jobs
    assert (job.strategy, job.gen_width, job.gen_height) == ("direct", 3840, 2160)
    with pytest.raises(PlanError) as e:
        plan_layout(auto, budget="1KiB", configs=configs)
    assert str(e.value) == ("bins.yaml: layers[0] (sky): memory budget 1.00 KiB is too small for 3840x2160: the "
                            "decode phase needs the most (weights 471.12 KiB + activations 196.31 MiB + attention); "
                            "the smallest budget that works is 259.72 MiB")


def test_a_checkpoint_without_bins_plans_from_its_folder(tiny_dir, tmp_path):
    """As `studio plan` reads it: a folder whose transformer has sample_size 96 (no bin table) plans `auto`
    layers directly, and refuses `upscale` naming the layer (it named neither file nor layer, and hinted at
    --no-binning, which layouts don't have)."""
    import shutil
    from studio.errors import ConfigError
    from studio.layout import load_layout

    folder = shutil.copytree(tiny_dir, tmp_path / "tiny96")
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 96}))
    layout_file = tmp_path / "l.yaml"
    layout_file.write_text("canvas: {preset: 4k}\nlayers:\n  - generate: {prompt: x, name: sky}\n")
    [job] = plan_layout(load_layout(layout_file), str(folder), "8GiB").jobs
    assert (job.strategy, job.gen_width, job.gen_height) == ("direct", 3840, 2160)
    layout_file.write_text("canvas: {preset: 4k}\nlayers:\n  - generate: {prompt: x, name: sky, strategy: upscale}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(layout_file))}:3: layers\\[0\\] \\(sky\\).generate.strategy: "
                                          f"{re.escape(UPSCALE_WITHOUT_BINS)}$"):
        plan_layout(load_layout(layout_file), str(folder), "8GiB")


def test_a_patch_of_4_plans_the_sizes_the_pipeline_takes(tiny_dir, tmp_path):
    """A transformer of patch_size 4 over the VAE's factor 8 takes multiples of 32 px: `direct` rounds a region up
    to them and counts 32 px tokens, as pipeline.check_size takes them (rounded to 16 px, the plan took 1008x1008
    with "961 tokens", which the pipeline refused); its cost counts those tokens too."""
    import shutil
    from studio import pipeline
    from studio.plan import model_configs

    folder = shutil.copytree(tiny_dir, tmp_path / "tiny-p4")
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "patch_size": 4}))
    layout = Layout("p4.yaml", Canvas(1000, 1000), (GenerateLayer("a", strategy="direct"),))
    [job] = plan_layout(layout, str(folder), "8GiB").jobs
    assert (job.strategy, job.gen_width, job.gen_height, job.latent, job.tokens) == \
        ("direct", 1024, 1024, (128, 128), 32 * 32)
    tr, _, vae = model_configs(str(folder))
    pipeline.check_size(tr, vae, job.gen_height, job.gen_width)  # taken
    with pytest.raises(pipeline.SizeError, match="^size 1008x1008 is not a multiple of 32 px; pick a multiple of 32, "):
        pipeline.plan(folder, 1008, 1008, use_resolution_binning=False)
    assert relative_cost(tr, 2048, 2048, vae=vae) == \
        pytest.approx(4096 * (24 * 32 ** 2 + 4 * 4096 * 32) / (1024 * (24 * 32 ** 2 + 4 * 1024 * 32)), rel=1e-12)


def test_a_plan_without_a_budget_runs_attention_whole():
    """budget None: no workspace bound (None, which attention_budget takes as unbounded, not 0 bytes)."""
    from studio.memory import attention_budget
    from studio.memory_plan import plan_generation
    t5 = T5Config(vocab_size=356, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    plan = plan_generation(TINY, t5, AutoencoderKLConfig.from_dict(vae_config()), 256, 256, 1, None, True)
    assert [p.workspace for p in plan.phases] == [None, None, None]
    for phase in plan.phases:
        assert all(c.mode(nq, nk) == "whole" for (_, _, nq, nk, _), c in zip(phase.attention, phase.chunks))
        with attention_budget(phase.workspace):
            assert attention_chunks(8, 300, 300, 64, phase.workspace).mode(300, 300) == "whole"


T5_TINY = T5Config(vocab_size=356, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)


def test_the_same_generation_in_two_layers_is_planned_once():
    """Layers with the same model, prompt, seed, steps, sampler and generation size make the same pixels: the
    later ones reuse the first (cost 0). Unguided, the negative prompt and the scale don't enter."""
    configs = (TINY, T5_TINY, AutoencoderKLConfig.from_dict(vae_config()))
    layout = Layout("same.yaml", Canvas(1024, 512), (
        GenerateLayer("fox", seed=3, region=Region("px", 0, 0, 512, 512)),
        GenerateLayer("fox", seed=3, region=Region("px", 512, 0, 512, 512), fit="contain", name="again"),
        GenerateLayer("fox", seed=4, region=Region("px", 512, 0, 512, 512)),  # another seed
        GenerateLayer("fox", seed=3, steps=10, region=Region("px", 512, 0, 512, 512)),  # other steps
        GenerateLayer("fox", seed=3, negative_prompt="blur", region=Region("px", 0, 0, 512, 512)),  # guided: differs
        GenerateLayer("fox", seed=3, guidance=1, region=Region("px", 0, 0, 512, 512)),
        GenerateLayer("fox", seed=3, guidance=0, negative_prompt="x", region=Region("px", 0, 0, 512, 512)),
    ))
    plan = plan_layout(layout, budget="4GiB", configs=configs)
    assert [j.reuses for j in plan.jobs] == [None, 0, None, None, None, None, 5]
    one = relative_cost(TINY, 512, 512)
    assert [j.cost for j in plan.jobs] == [round(c, 4) for c in (one, 0, one, one / 2, one, one / 2, 0)]
    assert plan.cost == round(sum(j.cost for j in plan.jobs), 4)
    text = plan.describe().splitlines()
    assert text[12].startswith("  generate [1]: direct at 512x512 (latent 64x64, 1024 tokens), cost 0.00 (the "
                               "generation of [0], reused), peak ")
    assert text[-1] == f"peak memory {format_bytes(plan.peak)}, cost {plan.cost:.2f}"


def test_a_model_spelled_two_ways_is_one_model_and_its_names_stay_as_written(tiny_dir, monkeypatch):
    """A layer naming the model folder by its absolute path makes the same generation as one taking the same
    folder relative to the working folder: planned once; the plan names each as its layer spells it."""
    monkeypatch.chdir(tiny_dir.parent)
    layout = Layout("two.yaml", Canvas(64, 32), (
        GenerateLayer("fox", seed=1, steps=1, region=Region("px", 0, 0, 32, 32)),
        GenerateLayer("fox", seed=1, steps=1, region=Region("px", 32, 0, 32, 32), model=str(tiny_dir)),
    ))
    plan = plan_layout(layout, tiny_dir.name, "1GiB")
    assert [(job.model, job.reuses) for job in plan.jobs] == [(tiny_dir.name, None), (str(tiny_dir), 0)]
    assert [(job["model"], job["reuses"]) for job in json.loads(plan.to_json())["jobs"]] == [
        (tiny_dir.name, None), (str(tiny_dir), 0)]


def test_plan_json_carries_what_the_text_shows():
    """Trim, bleed, dpi, each layer's type and name, whether the budget was automatic, each generation's model
    and reuse, and the total cost: in the JSON as in the text."""
    configs = (TINY, T5_TINY, AutoencoderKLConfig.from_dict(vae_config()))
    layout = Layout("poster.yaml", BLEED, (
        GenerateLayer("sky", region=Region("percent", 0, 0, 100, 50), name="sky"),
        TextLayer("hello", region=Region("percent", 10, 70, 80, 20), name="caption"),
    ))
    given = json.loads(plan_layout(layout, budget="6GiB", configs=configs).to_json())
    assert (given["trim"], given["bleed"], given["dpi"], given["file_dpi"]) == ({"width": 4960, "height": 7016}, 36,
                                                                                300, 300)
    assert given["layers"] == [{"type": "generate", "name": "sky", "box": {"x": 36, "y": 36, "w": 4960, "h": 3508}},
                               {"type": "text", "name": "caption",
                                "box": {"x": 532, "y": 4947, "w": 3968, "h": 1403}}]
    assert given["boxes"] == [layer["box"] for layer in given["layers"]]  # as before
    assert (given["budget"], given["budget_automatic"]) == (6 * 2 ** 30, False)
    [job] = given["jobs"]
    assert (job["model"], job["reuses"], job["strategy"]) == (None, None, "upscale")
    assert given["cost"] == job["cost"] > 0
    auto = plan_layout(layout, budget="auto", configs=configs)
    assert json.loads(auto.to_json())["budget_automatic"] is True
    assert auto.describe().splitlines()[0] == (
        f"poster.yaml: canvas 5032x7088 px (trim 4960x7016, bleed 36, 300 dpi), 2 layers, budget "
        f"{format_bytes(auto.budget)} (automatic: free memory now)")


def test_a_spans_plan_says_the_dpi_its_files_carry():
    """A span's canvas is drawn at its densest monitor's density (109 dpi: 2560 px over 597 mm), which its files
    carry; canvas.dpi (300 here) only sizes pt and mm lengths."""
    left, right = Monitor("left", 2560, 1440, 597, 336), Monitor("right", 2560, 1440, 597, 336)
    span = Span((left, right), (20,))
    plan = plan_layout(Layout("wall.yaml", Canvas(*span_canvas(span)[:2], dpi=300), (FillLayer((0, 0, 0, 255)),),
                              span=span), budget="1GiB")
    assert (plan.file_dpi, json.loads(plan.to_json())["file_dpi"]) == (109, 109)
    assert plan.describe().splitlines()[0] == ("wall.yaml: canvas 5206x1440 px (trim 5206x1440, bleed 0, 300 dpi, "
                                               "files at 109 dpi), 1 layer, budget 1.00 GiB")


@pytest.mark.parametrize("monitors, lines", [
    # 240 px over 27in's 597.73 mm (10.2 dpi) sets the density: the 160x90 px ones are cut at 240x135, 1.5x
    ("[{name: left, width: 160, height: 90, size: [597mm, 336mm]}, {name: center, width: 240, height: 135, "
     "diagonal: 27in}, {name: right, width: 160, height: 90, size: [597mm, 336mm]}]",
     ["  monitor left: 160x90 px at 7 dpi, cut from 240x135 at (0, 0) of the span (scale 0.667)",
      "  monitor center: 240x135 px at 10 dpi, cut from 240x135 at (247, 0) of the span",
      "  monitor right: 160x90 px at 7 dpi, cut from 240x135 at (494, 0) of the span (scale 0.667)"]),
    # span-3-monitors.yaml's: 2560 px over 3835 px wide (0.6675), 1440 over 2158 high (0.6673); unnamed ones
    ("[{width: 2560, height: 1440, size: [597mm, 336mm]}, {width: 3840, height: 2160, diagonal: 27in}]",
     ["  monitor monitor-1: 2560x1440 px at 109 dpi, cut from 3835x2158 at (0, 1) of the span (scale 0.668 x 0.667)",
      "  monitor monitor-2: 3840x2160 px at 163 dpi, cut from 3840x2160 at (3951, 0) of the span"]),
])
def test_a_spans_plan_names_each_monitor_its_pixels_dpi_and_cut(monitors, lines):
    """Each monitor's line: its name, its own pixels and dpi (its files'), the box of the span it is cut from, and
    the scale from that box to its pixels when not 1."""
    from studio.layout import parse_layout

    layout = parse_layout(f"span: {{monitors: {monitors}, bezels: 18mm}}\nlayers: [{{fill: {{color: red}}}}]\n")
    assert plan_layout(layout, budget="1GiB").describe().splitlines()[-1 - len(lines):-1] == lines


def _scheduler(folder, **changes):
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_sampler_the_model_cannot_run_fails_at_planning(tiny_dir, tmp_path):
    """The pipeline would raise these at the layer's generation, after the layers before it had been
    generated; the plan raises them first, naming the layer."""
    import shutil
    from studio.errors import ConfigError
    from studio.layout import load_layout

    unipc = shutil.copytree(tiny_dir, tmp_path / "unipc")
    _scheduler(unipc, _class_name="UniPCMultistepScheduler")
    index = unipc / "model_index.json"  # the class diffusers builds
    index.write_text(json.dumps({**json.loads(index.read_text()), "scheduler": ["diffusers", "UniPCMultistepScheduler"]}))
    given_betas = shutil.copytree(tiny_dir, tmp_path / "betas")
    _scheduler(given_betas, trained_betas=[0.0001, 0.02])  # no sampler of studio's takes it
    layout_file = tmp_path / "l.yaml"

    def plan(layers):
        text = "".join(f"  - generate: {layer}\n" for layer in layers)
        layout_file.write_text("canvas: {width: 64, height: 64}\nlayers:\n" + text)
        return plan_layout(load_layout(layout_file), str(tiny_dir), "1GiB")

    # each at its layer's line in the file (the layer names the model the problem comes from)
    with pytest.raises(ConfigError) as e:
        plan(["{prompt: a}", f"{{prompt: b, model: {unipc}, name: owl}}"])
    assert str(e.value) == (f"{layout_file}:4: layers[1] (owl): {unipc}/scheduler/scheduler_config.json: "
                            f"_class_name='UniPCMultistepScheduler' is not supported; expected one of "
                            f"DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler; give the layer "
                            f"`sampler: dpm++` (or ddim, euler) to sample with one of studio's samplers")
    with pytest.raises(ConfigError) as e:
        plan([f"{{prompt: a, model: {given_betas}}}"])
    assert str(e.value) == (f"{layout_file}:3: layers[0]: {given_betas}/scheduler/scheduler_config.json: "
                            f"trained_betas=[0.0001, 0.02] is not supported; only None")
    assert [j.model for j in plan(["{prompt: a}", f"{{prompt: b, model: {unipc}, sampler: euler}}"]).jobs] == [
        str(tiny_dir), str(unipc)]
    # dpm++ with linspace spacing visits a timestep twice at 1000 steps
    with pytest.raises(InputError) as e:
        plan(["{prompt: a}", "{prompt: a, steps: 1000}"])
    assert str(e.value) == (f"{layout_file}:4: layers[1].generate.steps: dpm++ with timestep_spacing 'linspace' visits timestep "
                            f"500 twice at 1000 steps; use fewer steps")
    assert plan(["{prompt: a, steps: 1000, sampler: ddim}"]).jobs[0].cost > 0


def test_every_layers_problem_is_reported_at_once_at_its_key(tiny_dir, tmp_path, monkeypatch):
    """A step count past the scheduler's training steps, an upscale without bins, a model that can't be read
    and a budget too small: each layer's at once, each at the layout key it is about (the steps in the layout's
    words, not the API's num_steps=; a default step count at the layer's line), in the first one's class."""
    import shutil
    from studio.errors import ConfigError
    from studio.layout import load_layout

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny10 = shutil.copytree(tiny_dir, tmp_path / "tiny10")
    _scheduler(tiny10, num_train_timesteps=10)
    tiny48 = shutil.copytree(tiny_dir, tmp_path / "tiny48")
    config = tiny48 / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 48}))
    layout_file = tmp_path / "st.yaml"
    layout_file.write_text(f"canvas: {{width: 64, height: 64}}\nmodel: {tiny10}\nlayers:\n"
                           "  - generate: {prompt: a, steps: 5}\n"
                           "  - generate:\n      prompt: b\n      name: sky\n      steps: 30\n"
                           "  - generate: {prompt: c}\n"
                           f"  - generate:\n      prompt: d\n      model: {tiny48}\n      strategy: upscale\n"
                           "  - generate: {prompt: e, model: nobody/nothing-here}\n"
                           "  - generate: {prompt: f, model: nobody/nothing-here, steps: 40}\n")
    layout = load_layout(layout_file)
    with pytest.raises(InputError) as e:
        plan_layout(layout, budget="1GiB")
    past = "must be an integer in 1..10 (the model's scheduler has 10 training steps)"
    *problems, unread = str(e.value).splitlines()
    assert problems == [
        f"{layout_file}:8: layers[1] (sky).generate.steps: 30 {past}",
        f"{layout_file}:9: layers[2].generate.steps: 20 {past}",  # the default: at the layer
        f"{layout_file}:13: layers[3].generate.strategy: `strategy: upscale` generates at the model's aspect-ratio "
        f"bins, and a transformer of sample_size 48 has none (there are bins for sample_size 32, 64, 128, 256); "
        f"give the layer `strategy: direct`",
    ]
    # once, for both layers that name it
    assert unread.startswith(f"{layout_file}:14: layers[4].generate.model: nobody/nothing-here: not a local folder")
    with pytest.raises(InputError) as e:  # the budget's shortfall too, after the layers' own problems
        plan_layout(layout, budget="1KiB")
    assert len(str(e.value).splitlines()) == 5
    assert str(e.value).splitlines()[-1] == (f"{layout_file}:4: memory budget 1.00 KiB is too small for 3 generate "
                                             f"layers: layers[0] needs 4.25 MiB, layers[1] (sky) 4.25 MiB, layers[2] "
                                             f"4.25 MiB; the smallest budget that works is 4.25 MiB")
    layout_file.write_text(f"canvas: {{width: 64, height: 64}}\nmodel: {tiny48}\nlayers:\n"
                           "  - generate: {prompt: a, strategy: upscale}\n  - generate: {prompt: a, steps: 1000}\n")
    with pytest.raises(ConfigError) as e:  # the class of the first; dpm++ visits a timestep twice at 1000 steps
        plan_layout(load_layout(layout_file), budget="1KiB")
    assert [line.split(": ")[1] for line in str(e.value).splitlines()] == [
        "layers[0].generate.strategy", "layers[1].generate.steps", "layers[1]"]  # the last: its budget


def test_a_region_that_rounds_to_nothing_is_refused_before_planning():
    """w: 0.01% of 1000 px is 0 px once rounded: no generation of 0 px, and no layer silently left out."""
    configs = (TINY, T5_TINY, AutoencoderKLConfig.from_dict(vae_config()))
    layout = Layout("empty.yaml", Canvas(1000, 500),
                    (GenerateLayer("a", region=Region("percent", 10, 0, 0.01, 50), strategy="direct"),
                     GenerateLayer("b", region=Region("percent", 10, 0, 0.06, 50), strategy="direct")))
    with pytest.raises(InputError) as e:
        plan_layout(layout, budget="1GiB", configs=configs)
    assert str(e.value) == ("empty.yaml: layers[0] (GenerateLayer).region: the region is 0 x 250 px once its edges "
                            "are rounded to whole pixels (x = 100 px and x + w = 100.1 px both round to 100); a region "
                            "is at least 1 px wide and high")
    layout = Layout("empty.yaml", Canvas(1000, 500), layout.layers[1:])
    plan = plan_layout(layout, budget="1GiB", configs=configs)
    assert plan.boxes == (Box(100, 0, 1, 250),)
    assert [(j.layer, j.strategy, j.gen_width, j.gen_height) for j in plan.jobs] == [(0, "direct", 16, 256)]


def test_a_transformer_only_model_plans_with_the_bases_configs(tiny_dir, tmp_path, monkeypatch):
    """Its own transformer config and the base's others (from $STUDIO_BASE_PIPELINE's folder; without the
    published base on this machine, its published configs); a base $STUDIO_BASE_PIPELINE names must be there."""
    import shutil
    from studio.checkpoint import MissingBase
    from studio.layout import load_layout
    from studio.pipeline import read_configs
    from studio.plan import SDXL_VAE, model_configs, model_sampler

    only = tmp_path / "only"
    shutil.copytree(tiny_dir / "transformer", only / "transformer")
    config = only / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 96}))  # not the base's
    base = shutil.copytree(tiny_dir, tmp_path / "base")
    shutil.rmtree(base / "transformer")
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(base))
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "studio"))
    layout_file = tmp_path / "l.yaml"
    layout_file.write_text("canvas: {width: 256, height: 256}\nlayers:\n  - generate: {prompt: x, steps: 2}\n")
    tiny = read_configs(tiny_dir)
    with pytest.warns(UserWarning, match="holds a transformer only"):
        tr, t5, vae = model_configs(str(only))
        sampler = model_sampler(str(only))
        [job] = plan_layout(load_layout(layout_file), str(only), "1GiB").jobs
    assert (tr.sample_size, t5, vae) == (96, tiny[1], tiny[2])
    assert sampler.sampler == "dpm++"
    assert (job.strategy, job.gen_width, job.gen_height, job.latent) == ("direct", 256, 256, (32, 32))
    shutil.rmtree(base)
    with pytest.raises(MissingBase, match=f"^{re.escape(str(only))}: holds a transformer only"):
        model_configs(str(only))
    monkeypatch.delenv("STUDIO_BASE_PIPELINE")  # the published base, not on this machine
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tr, t5, vae = model_configs(str(only))
    assert (tr.sample_size, t5, vae) == (96, T5Config(), SDXL_VAE)
    assert model_sampler(str(only)) is None
    [job] = plan_layout(load_layout(layout_file), str(only), "8GiB").jobs
    assert (job.gen_width, job.gen_height, job.latent) == (256, 256, (32, 32))


def test_the_layout_planner_caps_a_vae_map_on_the_cpu_only(monkeypatch):
    """A 3840x2160 generation decodes through the SDXL VAE's 7.91 GiB fp32 map (256 channels at full size): in
    tiles on the CPU, whose allocator caps a tensor at MAX_TENSOR, untiled where the budget alone decides."""
    from studio import backend
    from studio.plan import SDXL_VAE
    layout = Layout("big.yaml", CANVAS, (GenerateLayer("b", region=Region("full"), strategy="direct"),))

    def tiles():
        [job] = plan_layout(layout, budget="1024GiB", configs=(TINY, T5_TINY, SDXL_VAE)).jobs
        return job.memory.phases[2].tiles
    assert tiles() is not None
    monkeypatch.setattr(backend, "on_cpu", lambda: False)
    assert tiles() is None
