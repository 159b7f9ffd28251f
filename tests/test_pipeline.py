"""The whole pipeline against diffusers' PixArtSigmaPipeline on the same tiny checkpoint and latents."""

import copy
import pickle
import re

import numpy as np
import pytest

from studio.pipeline import PipelineOutput, PixArtSigmaPipeline, as_latents
from tests.util import rel_l2

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def pipes(tiny_dir):
    ref = diffusers.PixArtSigmaPipeline.from_pretrained(tiny_dir)
    ref.set_progress_bar_config(disable=True)
    return PixArtSigmaPipeline.from_pretrained(tiny_dir, keep_text_encoder=True), ref


@pytest.mark.parametrize("height,width,negative,n_per_prompt", [
    (256, 256, "", 1), (256, 256, "watermark, text", 1), (200, 328, "blurry, low quality", 2)])
def test_pipeline_matches_diffusers(pipes, height, width, negative, n_per_prompt):
    ours, ref = pipes
    prompts = ["A Red cat at night, oil painting ", "a wooden boat by the sea"]
    bh, bw = 256 if height == width else 192, 256 if height == width else 320  # the bins diffusers picks too
    latents = np.random.default_rng(3).standard_normal((2 * n_per_prompt, 4, bh // 8, bw // 8)).astype(np.float32)
    kwargs = dict(negative_prompt=negative, height=height, width=width, num_inference_steps=5, guidance_scale=4.5,
                  num_images_per_prompt=n_per_prompt)
    for output_type in ("latent", "np"):
        expected = ref(prompts, latents=torch.from_numpy(latents), output_type=output_type, clean_caption=False,
                       **kwargs).images
        actual = ours(prompts, latents=latents, output_type=output_type, **kwargs).images
        expected = np.asarray(expected)
        assert actual.shape == expected.shape
        assert rel_l2(actual, expected) <= 1e-3, output_type
    assert actual.shape == (2 * n_per_prompt, height, width, 3)


def test_prompt_and_negative_lists_pair_up_as_in_the_reference(pipes):
    """Each negative guides its own prompt's images, in the reference's order (prompt-major, n per prompt), for
    prompts that are empty, blank, unicode with outer whitespace (lowercased and stripped by both) or longer
    than max_sequence_length (cut there by both; studio warns of each cut text, the reference logs prompts')."""
    ours, ref = pipes
    long = "a red cat sitting on a wooden boat by the sea at night, oil painting " * 12
    prompts, negatives = ["", "  Ünïcödé ÇAT 猫 \t", long], ["blurry", "   ", "  WATERMARK, Text " + long]
    latents = np.random.default_rng(8).standard_normal((6, 4, 32, 32)).astype(np.float32)
    kwargs = dict(height=256, width=256, num_inference_steps=2, num_images_per_prompt=2, max_sequence_length=120,
                  output_type="latent")
    expected = ref(prompts, negative_prompt=negatives, latents=torch.from_numpy(latents), clean_caption=False,
                   **kwargs).images.numpy()
    with pytest.warns(UserWarning, match="' is cut at 120 tokens") as cut:
        actual = ours(prompts, negative_prompt=negatives, latents=latents, **kwargs).images
    assert len(cut) == 2
    assert rel_l2(actual, expected) <= 1e-3
    with pytest.warns(UserWarning, match="' is cut at 120 tokens"):
        swapped = ours(prompts, negative_prompt=negatives[::-1], latents=latents, **kwargs).images
    assert rel_l2(swapped, expected) > 1e-2  # the pairing matters


@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "euler"])
def test_one_step_of_each_sampler_matches_the_reference(pipes, sampler):
    ours, ref = pipes
    schedulers = {"dpm++": diffusers.DPMSolverMultistepScheduler, "ddim": diffusers.DDIMScheduler,
                  "euler": diffusers.EulerDiscreteScheduler}
    original = ref.scheduler
    ref.scheduler = schedulers[sampler].from_config(original.config)
    latents = np.random.default_rng(9).standard_normal((2, 4, 32, 32)).astype(np.float32)
    kwargs = dict(negative_prompt="blurry", height=256, width=256, num_inference_steps=1, output_type="latent")
    try:
        expected = ref(["a cat", "a dog"], latents=torch.from_numpy(latents), clean_caption=False, **kwargs).images
    finally:
        ref.scheduler = original
    actual = ours(["a cat", "a dog"], latents=latents, sampler=sampler, **kwargs).images
    assert rel_l2(actual, expected.numpy()) <= 1e-3


def test_progress_and_callback_count_the_steps_run_where_the_reference_runs_fewer_than_asked(pipes):
    """DPM-Solver++ with "trailing" spacing and a lambda_min_clipped runs 9 steps for num_inference_steps=10, as
    the reference: the same latents, and progress and callback count 9."""
    from studio.sampling import SamplerConfig
    from studio.tiny import SCHEDULER
    ours, ref = pipes
    d = {**SCHEDULER, "timestep_spacing": "trailing", "lambda_min_clipped": -4.0}
    latents = np.random.default_rng(4).standard_normal((1, 4, 32, 32)).astype(np.float32)
    kwargs = dict(height=256, width=256, num_inference_steps=10, output_type="latent")
    original = ours.sampler, ref.scheduler
    ours.sampler = SamplerConfig.from_scheduler_config(d)
    ref.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(d)
    try:
        expected = ref("a cat", latents=torch.from_numpy(latents), clean_caption=False, **kwargs).images
        steps, progress = [], []
        actual = ours("a cat", latents=latents, callback=lambda i, n: steps.append((i, n)),
                      progress=lambda phase, done, total: progress.append((phase, done, total)), **kwargs).images
        assert len(ref.scheduler.timesteps) == 9
    finally:
        ours.sampler, ref.scheduler = original
    assert rel_l2(actual, expected.numpy()) <= 1e-3
    assert steps == [(i, 9) for i in range(9)]
    assert [p for p in progress if p[0] == "denoise"] == [("denoise", i, 9) for i in range(10)]


def test_binning_gives_the_requested_size_where_the_references_rounding_cuts_it_to_one_pixel(pipes):
    """151 x 231 px generates at the 208 x 304 bin. Scaling it to cover the request, the reference computes
    int(304 * (231 / 304)) = int(230.99999) = 230 px, and its centre crop of 231 columns from 230 keeps one:
    a 151 x 1 px image (1-2% of requested sizes do so). Studio scales to the exact 231 px: the reference's
    own decode, resized by torch to 158 x 231 and centre-cropped."""
    ours, ref = pipes
    latents = np.random.default_rng(10).standard_normal((1, 4, 26, 38)).astype(np.float32)
    kwargs = dict(height=151, width=231, num_inference_steps=2)
    with torch.no_grad():
        z = ref("a cat", latents=torch.from_numpy(latents), output_type="latent", clean_caption=False, **kwargs).images
        decoded = ref.vae.decode(z / ref.vae.config.scaling_factor).sample  # (1, 3, 208, 304)
        scaled = torch.nn.functional.interpolate(decoded, size=(158, 231), mode="bilinear", align_corners=False)
        expected = (scaled[:, :, 3:154] / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    actual = ours("a cat", latents=latents, output_type="np", **kwargs).images
    assert actual.shape == (1, 151, 231, 3)
    assert rel_l2(actual, expected) <= 1e-3


@pytest.mark.parametrize("src,dst,scaled", [
    ((208, 304), (151, 231), (158, 231)), ((176, 368), (6, 13), (6, 13)), ((640, 1600), (43, 113), (45, 113)),
    ((1216, 832), (106, 71), (106, 72)), ((208, 304), (150, 200), (150, 219))])  # the last: no rounding issue
def test_resize_and_center_crop_covers_the_request(src, dst, scaled):
    """Where the reference's floating-point cover size falls one pixel short (the first four), studio's is the
    request; elsewhere the two are the same. Either way: torch's bilinear resize to that size, centre-cropped."""
    from studio import binning
    x = np.random.default_rng(0).random((1, 3, *src), dtype=np.float32)
    resized = torch.nn.functional.interpolate(torch.from_numpy(x), size=scaled, mode="bilinear", align_corners=False)
    top, left = (scaled[0] - dst[0]) // 2, (scaled[1] - dst[1]) // 2
    expected = resized[:, :, top:top + dst[0], left:left + dst[1]].numpy()
    actual = binning.resize_and_center_crop(x, *dst)
    assert actual.shape == (1, 3, *dst)
    assert rel_l2(actual, expected) <= 1e-4  # torch computes source positions in float32, studio in float64


def test_binning_resizes_each_image_as_before_and_plans_the_resize(pipes, monkeypatch):
    """Two images asked at 200 x 300 px generate at the 208 x 304 bin. 'np' gives each decoded image resized
    bit for bit as the einsum studio used before did it (for that image alone), in [0, 1]; 'pil' those
    rounded to uint8; and each call's memory plan counts the resize to 200 x 300 for its output type."""
    import mindspore as ms

    from studio import binning
    from tests.test_binning import einsum_resize  # studio's resize before it went one image at a time
    ours, _ = pipes
    plans, original = [], ours.generation_plan
    monkeypatch.setattr(ours, "generation_plan", lambda *args, **kwargs: plans.append(original(*args, **kwargs))
                        or plans[-1])
    kwargs = dict(height=300, width=200, num_inference_steps=1, seed=3, num_images_per_prompt=2)
    latents = ours("a cat", output_type="latent", **kwargs).images
    decoded = ours.decode(ms.Tensor(latents))  # (2, 3, 304, 208)

    expected = np.concatenate([einsum_resize(decoded[i:i + 1], 300, 200) for i in range(2)])
    expected = np.clip(expected * 0.5 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)  # (2, 300, 200, 3)
    np.testing.assert_array_equal(ours("a cat", output_type="np", **kwargs).images, expected)
    pictures = ours("a cat", **kwargs).images
    for picture, image in zip(pictures, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(picture), np.round(image * 255).astype(np.uint8))
    assert [plan.output for plan in plans] == [None, (300, 200), (300, 200)]
    assert [plan.phases[2].resize for plan in plans] == [
        0, binning.resize_bytes(2, 3, 304, 208, 300, 200, "np"), binning.resize_bytes(2, 3, 304, 208, 300, 200)]


def test_pil_output_and_seed_reproducible(pipes):
    ours, _ = pipes
    a = ours("a cat", height=256, width=256, num_inference_steps=2, seed=7).images
    b = ours("a cat", height=256, width=256, num_inference_steps=2, seed=7, output_type="np").images
    assert a[0].size == (256, 256) and a[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(a[0]), (b[0] * 255).round().astype(np.uint8))


def test_callback_steps_and_output_type_none_as_the_reference_takes_them(pipes):
    """callback_steps=k calls the callback at steps 0, k, 2k, ... as diffusers does (progress still every
    step); output_type=None gives numpy images, as diffusers' postprocess reads it."""
    from studio.errors import InputError
    ours, ref = pipes
    kwargs = dict(height=256, width=256, num_inference_steps=5)
    seen, expected = [], []
    ref("a cat", callback=lambda i, t, x: expected.append(i), callback_steps=2, clean_caption=False,
        latents=torch.zeros(1, 4, 32, 32), output_type="latent", **kwargs)  # None: a deprecation warning there
    images = ours("a cat", callback=lambda i, n: seen.append(i), callback_steps=2, seed=1, output_type=None,
                  **kwargs).images
    assert seen == expected == [0, 2, 4]
    assert isinstance(images, np.ndarray) and images.shape == (1, 256, 256, 3)
    for bad in (0, 1.5, True):
        with pytest.raises(InputError, match=f"^callback_steps must be a positive integer, got {bad!r}$"):
            ours("a cat", callback_steps=bad)


def test_a_size_off_the_latent_patch_gives_its_problem_apart(pipes, tiny_dir):
    """The planned and the called generation refuse it alike; SizeError's `problem` is the message without the
    API's way out, for the CLI to say its own (it replaced BINNING_ON in the text)."""
    from studio import pipeline

    ours, _ = pipes
    for run in (lambda: pipeline.plan(tiny_dir, 100, 104, use_resolution_binning=False),
                lambda: ours("a cat", height=100, width=104, use_resolution_binning=False)):
        with pytest.raises(pipeline.SizeError) as info:
            run()
        assert info.value.problem == "size 104x100 is not a multiple of 16 px; pick a multiple of 16"
        assert str(info.value) == f"{info.value.problem}, or {pipeline.BINNING_ON}"


def test_default_size_is_the_checkpoints_native_size(pipes):
    """Without height/width both pipelines generate at sample_size x 8 px (256 for this checkpoint)."""
    ours, ref = pipes
    native = ours.transformer.config.sample_size * 8
    latents = np.random.default_rng(4).standard_normal((1, 4, native // 8, native // 8)).astype(np.float32)
    expected = ref("a cat", latents=torch.from_numpy(latents), num_inference_steps=2, output_type="latent",
                   clean_caption=False).images.numpy()
    actual = ours("a cat", latents=latents, num_inference_steps=2, output_type="latent").images
    assert actual.shape == expected.shape == (1, 4, native // 8, native // 8)
    assert rel_l2(actual, expected) <= 1e-3


@pytest.mark.parametrize("seed", [-1, 1.5, True, "7"])
def test_bad_seed_is_refused_before_any_work(pipes, seed):
    from studio.errors import InputError
    with pytest.raises(InputError, match=f"seed must be a non-negative integer, got {seed!r}"):
        pipes[0]("a cat", seed=seed)


def test_latents_of_another_shape_are_refused_before_the_text_encoder_runs(pipes):
    from studio.errors import InputError
    phases = []
    with pytest.raises(InputError, match=re.escape("latents have shape (1, 4, 64, 64), expected (1, 4, 32, 32) (N, "
                                                   "C, height/8, width/8 of the generation size)")):
        pipes[0]("a cat", height=256, width=256, use_resolution_binning=False, num_inference_steps=1,
                 latents=np.zeros((1, 4, 64, 64), np.float32), progress=lambda *args: phases.append(args))
    assert phases == []


@pytest.mark.parametrize("value,dtype,shown,shown_torch", [
    (np.nan, np.float32, "nan", "nan"), (-np.inf, np.float32, "-inf", "-inf"),
    # float64 beyond float32's range: infinite once cast, with no numpy warning
    (1e300, np.float64, "1e+300", "inf"), (-4e38, np.float64, "-4e+38", "-inf")])
def test_non_finite_latents_are_refused_before_the_text_encoder_runs(pipes, value, dtype, shown, shown_torch):
    """Not a NumericalError blaming overflow after the whole run. A torch tensor is read as float32 (torch's
    cast makes float64 beyond its range infinite)."""
    from studio.errors import InputError
    latents = np.zeros((1, 4, 32, 32), dtype)
    latents[0, 2, 3, 4] = latents[0, 3, 0, 0] = value
    phases = []
    for given, shown in ((latents, shown), (torch.from_numpy(latents), shown_torch)):
        with pytest.raises(InputError, match=re.escape(f"latents must be finite float32 numbers (magnitude up to "
                                                       f"3.4e+38): latents[0, 2, 3, 4] is {shown} (2 of 4096 values "
                                                       f"are not)")):
            pipes[0]("a cat", height=256, width=256, use_resolution_binning=False, num_inference_steps=1,
                     latents=given, progress=lambda *args: phases.append(args))
    assert phases == []
    latents[0, 2, 3, 4] = latents[0, 3, 0, 0] = 3e38  # within float32's range: taken
    taken = as_latents(latents, (1, 4, 32, 32))
    assert taken.dtype == np.float32 and taken[0, 2, 3, 4] == np.float32(3e38) and np.count_nonzero(taken) == 2


def test_a_torch_generator_draws_the_references_noise(pipes):
    """generator=torch.Generator (or one per image) gives diffusers' latents; return_dict=False a tuple."""
    ours, ref = pipes
    kwargs = dict(height=256, width=256, num_inference_steps=2, output_type="latent")
    expected = ref(["a cat", "a dog"], generator=torch.Generator().manual_seed(3), clean_caption=False,
                   **kwargs).images.numpy()
    (actual,) = ours(["a cat", "a dog"], generator=torch.Generator().manual_seed(3), return_dict=False, **kwargs)
    assert rel_l2(actual, expected) <= 1e-3
    per_image = [torch.Generator().manual_seed(s) for s in (5, 6)]
    expected = ref("a cat", num_images_per_prompt=2, generator=per_image, clean_caption=False, **kwargs).images
    per_image = [torch.Generator().manual_seed(s) for s in (5, 6)]
    out = ours("a cat", num_images_per_prompt=2, generator=per_image, **kwargs)
    assert out.seed is None and out[0] is out.images
    assert rel_l2(out.images, expected.numpy()) <= 1e-3


@pytest.mark.parametrize("generator,images,message", [
    (42, 1, "generator must be a torch.Generator or a list of 1 (one per image), got 42"),
    (np.random.default_rng(0), 1, "generator must be a torch.Generator or a list of 1 (one per image), got Generator("),
    ([torch.Generator(), 42], 2, "generator must be a torch.Generator or a list of 2 (one per image), got [<"),
    ([torch.Generator()] * 3, 2, "3 generators for 2 images; pass one per image, or one"),
    ([], 1, "0 generators for 1 image; pass one per image, or one"),
])
def test_a_bad_generator_is_refused_before_any_work(pipes, generator, images, message):
    """Not a raw AttributeError, nor a wrong count found after the text encoder ran."""
    from studio.errors import InputError
    phases = []
    with pytest.raises(InputError, match=re.escape(message)):
        pipes[0]("a cat", height=256, width=256, num_inference_steps=1, output_type="latent", generator=generator,
                 num_images_per_prompt=images, progress=lambda phase, done, total: phases.append(phase))
    assert phases == []


def test_fp16_stays_as_close_to_fp32_as_the_references_fp16(tiny_dir, pipes):
    """Five guided steps in fp16 against the fp32 reference: diffusers' fp16 is 2.9e-3 away (relative L2)
    on this checkpoint, whose latents grow to ~100 (fp16 layer norms then overflowed: 1.1e-2)."""
    _, ref = pipes
    latents = np.random.default_rng(6).standard_normal((1, 4, 32, 32)).astype(np.float32)
    kwargs = dict(height=256, width=256, num_inference_steps=5, output_type="latent")
    expected = ref("a cat", latents=torch.from_numpy(latents), clean_caption=False, **kwargs).images.numpy()
    with pytest.warns(UserWarning, match="^studio: float16 on the CPU"):
        half = PixArtSigmaPipeline.from_pretrained(tiny_dir, dtype="float16")
    assert rel_l2(half("a cat", latents=latents, **kwargs).images, expected) <= 4e-3


def test_float16_on_the_cpu_is_said_to_be_slower_and_planned_at_its_weights_bytes(tiny_dir):
    """fp16 on the CPU runs MindSpore's fp16 kernels (studio's fused ones are fp32 only): said at load. The plan
    counts the weights as loaded, T5's fp32 `wo` included: exactly the bytes the kept encoder and the models
    hold."""
    from studio.pipeline import FLOAT16_ON_CPU
    with pytest.warns(UserWarning, match=f"^{re.escape(FLOAT16_ON_CPU)}$") as said:
        pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir, dtype="float16", keep_text_encoder=True)
    assert len(said) == 1 and FLOAT16_ON_CPU == (
        "studio: float16 on the CPU is about 4x slower than float32 (MindSpore's float16 kernels) and saves only the "
        "weights' memory: its activations take more than float32's")
    pipe.encode_prompt("a cat")
    assert pipe._text_encoder is not None
    assert pipe.generation_plan(256, 256, 1, None, True).phases[1].weights == pipe._resident_bytes()


def test_unguided_calls_ignore_the_negative_prompt_as_the_reference_does(pipes):
    ours, ref = pipes
    latents = np.random.default_rng(5).standard_normal((2, 4, 32, 32)).astype(np.float32)
    kwargs = dict(height=256, width=256, num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    expected = ref(["a cat", "a dog"], latents=torch.from_numpy(latents), clean_caption=False, **kwargs).images
    for negative in (None, ["unused"], []):
        out = ours(["a cat", "a dog"], negative_prompt=negative, latents=latents.tolist(), **kwargs)
        assert rel_l2(out.images, expected.numpy()) <= 1e-3
        assert out.seed is None  # the latents decided the image


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=None), "prompt must be a string or a non-empty list of strings, got None"),
    (dict(prompt=5), "prompt must be a string or a non-empty list of strings, got 5"),
    (dict(prompt=[]), "prompt must be a string or a non-empty list of strings, got []"),
    (dict(negative_prompt=["a", "b"]), "negative_prompt has 2 entries, prompt has 1"),
    (dict(negative_prompt=3), "negative_prompt must be a string or a non-empty list of strings, got 3"),
    (dict(guidance_scale=None), "guidance_scale must be a finite number, got None"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number, got nan"),
    (dict(guidance_scale=torch.tensor(float("inf"))), "guidance_scale must be a finite number, got "),
    (dict(guidance_scale=np.array("4.5")), "guidance_scale must be a finite number, got "),
    (dict(guidance_scale=torch.tensor(True)), "guidance_scale must be a finite number, got "),
    (dict(guidance_scale=np.ones(1)), "guidance_scale must be a finite number, got array([1.])"),
    (dict(negative_prompt=[]), "negative_prompt has 0 entries, prompt has 1"),  # the reference: an IndexError
    (dict(vae_tiling="yes"), "vae_tiling must be None (automatic), True or False, got 'yes'"),
    (dict(seed=1, generator=1), "pass seed or generator"),
    (dict(seed=1, latents=np.zeros((1, 4, 32, 32))), "latents replace the initial noise: pass no seed or generator"),
    (dict(negative_prompt="x", negative_prompt_embeds=np.zeros((1, 2, 32)),
          negative_prompt_attention_mask=np.ones((1, 2))), "pass negative_prompt or negative_prompt_embeds, not both"),
    (dict(clean_caption=True), "clean_caption=True is not supported"),
    (dict(timesteps=[999, 500]), "timesteps= is not supported"),
    (dict(sigmas=[1.0, 0.5]), "sigmas= is not supported"),
    (dict(eta=0.5), "eta=0.5 is not supported"),
    (dict(sampler="ddim", num_inference_steps=1001), "num_steps=1001 must be an integer in 1..1000"),
    (dict(latents=np.zeros((1, 4, 8, 8))), "latents have shape (1, 4, 8, 8), expected (1, 4, 32, 32)"),
    (dict(prompt=None, prompt_embeds=np.zeros((2, 4, 32)), prompt_attention_mask=np.ones((2, 4)),
          negative_prompt_embeds=np.zeros((1, 4, 32)), negative_prompt_attention_mask=np.ones((1, 4))),
     "negative_prompt_embeds has 1 row, prompt_embeds has 2"),  # the reference: a ValueError on the shapes
    (dict(prompt=None, prompt_embeds=np.zeros((2, 4, 32)), prompt_attention_mask=np.ones((2, 4)),
          negative_prompt=["a", "b", "c"]), "negative_prompt has 3 entries, prompt_embeds has 2"),
    (dict(max_sequence_length=301), "max_sequence_length must be an integer from 1 to 300 (PixArt-Sigma's caption "
                                    "length), got 301"),  # the memory plan bounds captions by 300 tokens
    (dict(max_sequence_length=0), "max_sequence_length must be an integer from 1 to 300"),
    (dict(prompt=None, prompt_embeds=np.zeros((1, 302, 32)), prompt_attention_mask=np.eye(1, 302, 300)),
     "prompt_attention_mask attends to position 301: at most 300 (PixArt-Sigma's caption length, which the memory "
     "plan counts)"),
    (dict(num_inference_steps=True), "num_inference_steps must be a positive integer, got True"),
    (dict(height=torch.tensor(256.0)), "height must be a positive integer, got 256.0"),
    (dict(use_resolution_binning="no"), "use_resolution_binning must be True or False, got 'no'"),
    (dict(return_dict="no"), "return_dict must be True or False, got 'no'"),  # read as True
    (dict(stream_text_encoder="no"), "stream_text_encoder must be True or False, got 'no'"),
    (dict(latents="x"), "latents must be a numpy, torch or MindSpore array of numbers, got 'x'"),  # numpy's ValueError
    (dict(latents=[[1, 2], [3]]), "latents must be a numpy, torch or MindSpore array of numbers, got [[1, 2], [3]]"),
    (dict(prompt=None, prompt_embeds=np.zeros((1, 3, 32)), prompt_attention_mask=np.array([["a", "b", "c"]])),
     "prompt_attention_mask must be a numpy, torch or MindSpore array of numbers, got array([['a', 'b', 'c']], "
     "dtype='<U1')"),  # int()'s ValueError
    (dict(prompt=None, prompt_embeds=object(), prompt_attention_mask=np.ones((1, 3))),
     "prompt_embeds must be a numpy, torch or MindSpore array of numbers, got <object object at"),
    (dict(prompt=None, prompt_embeds=np.zeros((1, 0, 32)), prompt_attention_mask=np.ones((1, 0))),
     "prompt_embeds (1, 0, 32): needs at least one row and one token position"),
    (dict(prompt=None, prompt_embeds=np.zeros((0, 4, 32)), prompt_attention_mask=np.ones((0, 4))),
     "prompt_embeds (0, 4, 32): needs at least one row and one token position"),
    (dict(memory_budget="1KiB"), "memory budget 1.00 KiB is too small for 256x256"),  # a PlanError, a ValueError too
    (dict(callback=lambda step, timestep, latents: None), "callback is called as callback(step, total) after each "
                                                          "denoising step (the reference's callback(step, timestep, "
                                                          "latents) is not taken)"),
    (dict(callback=5), "callback is called as callback(step, total) after each denoising step (the reference's "
                       "callback(step, timestep, latents) is not taken), got 5"),
    (dict(progress=5), "progress is called as progress(phase, done, total) for each phase ('text', 'denoise', "
                       "'decode'), got 5"),
    (dict(progress=lambda done, total: None), "progress is called as progress(phase, done, total)"),
])
def test_bad_arguments_are_value_errors_naming_the_argument(pipes, kwargs, message):
    """Before any work, as the reference's check_inputs (a ValueError there too)."""
    kwargs = {"prompt": "a cat", "height": 256, "width": 256, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        pipes[0](**kwargs)


def test_switches_given_text_are_refused_not_read_as_true(pipes, tiny_dir):
    """A truthy "no" for a True/False switch outside a call's arguments (as for use_resolution_binning), and
    latents that are no array in one line (a TypeError from numpy)."""
    from studio import pipeline
    from studio.errors import InputError

    ours = pipes[0]
    for call, message in [
        (lambda: ours.encode_prompt("a cat", stream="no"),
         "stream must be None (as the pipeline is set), True or False, got 'no'"),
        (lambda: ours.encode_ahead("a cat", stream="no"), "stream must be True or False, got 'no'"),
        (lambda: PixArtSigmaPipeline.from_pretrained(tiny_dir, keep_text_encoder="no"),
         "keep_text_encoder must be True or False, got 'no'"),
        (lambda: pipeline.plan(tiny_dir, keep_text_encoder="no"), "keep_text_encoder must be True or False, got 'no'"),
        (lambda: pipeline.plan(tiny_dir, use_resolution_binning="no"),
         "use_resolution_binning must be True or False, got 'no'"),
        (lambda: ours("a cat", height=256, width=256, latents=object()),
         "latents must be a numpy, torch or MindSpore array of numbers, got <object object at "),
    ]:
        with pytest.raises(InputError) as e:
            call()
        assert str(e.value).startswith(message)
    kept = pipeline.plan(tiny_dir, keep_text_encoder=True)
    assert pipeline.plan(tiny_dir, keep_text_encoder=np.bool_(True)) == kept  # numpy's bool is a bool
    assert pipeline.plan(tiny_dir, keep_text_encoder=False) != kept


def test_a_zero_dimensional_guidance_scale_is_its_number_as_the_reference_takes_it(pipes):
    """guidance_scale=torch.tensor(4.5) (or a 0-d numpy or MindSpore array) guides as 4.5."""
    import mindspore as ms
    ours = pipes[0]
    kwargs = dict(height=256, width=256, num_inference_steps=1, output_type="latent", seed=2)
    expected = ours("a cat", guidance_scale=4.5, **kwargs).images
    for scale in (torch.tensor(4.5), np.array(4.5), ms.Tensor(4.5)):
        np.testing.assert_array_equal(ours("a cat", guidance_scale=scale, **kwargs).images, expected)


def test_an_overflow_is_an_error_not_a_black_image(pipes, monkeypatch):
    """NaN or infinite latents or pixels (a huge guidance_scale, float16's range) raise, naming the phase; the
    reference returns black images."""
    from studio.errors import NumericalError
    ours = pipes[0]
    kwargs = dict(height=64, width=64, use_resolution_binning=False, num_inference_steps=2, seed=1)
    for output_type in ("latent", "pil"):
        with pytest.raises(NumericalError, match=r"^denoising overflowed in float32: the result holds NaN or infinite "
                                                 r"values, no image is returned; guidance_scale 1e\+20 is far above"):
            ours("a cat", guidance_scale=1e20, output_type=output_type, **kwargs)
    assert np.isfinite(ours("a cat", guidance_scale=1e15, output_type="latent", **kwargs).images).all()
    decode = ours.decode
    monkeypatch.setattr(ours, "decode", lambda *a, **k: np.where(np.arange(3)[:, None, None] == 1, np.inf,
                                                                 decode(*a, **k)))
    with pytest.raises(NumericalError, match=r"^decoding overflowed in float32: the result holds NaN or infinite "
                                             r"values, no image is returned$"):
        ours("a cat", output_type="np", **kwargs)


def test_zero_dimensional_integer_arguments_are_their_numbers_as_the_reference_takes_them(pipes):
    """height=torch.tensor(256) and the other counts as 0-d torch, numpy or MindSpore arrays run as the numbers."""
    import mindspore as ms
    ours = pipes[0]
    kwargs = dict(num_inference_steps=1, output_type="latent", seed=2, max_sequence_length=120)
    expected = ours("a cat", height=256, width=128, **kwargs).images
    for zero_d in (torch.tensor, np.array, ms.Tensor):
        given = {k: zero_d(v) for k, v in dict(height=256, width=128, **kwargs).items() if k != "output_type"}
        actual = ours("a cat", output_type="latent", use_resolution_binning=zero_d(True), **given).images
        np.testing.assert_array_equal(actual, expected)


def test_positional_arguments_numpy_numbers_and_torch_latents_as_the_reference_takes_them(pipes):
    """The reference's first three arguments by position (prompt, negative_prompt, num_inference_steps; a fourth
    is refused, not read as something else), numpy numbers for guidance, image count and size, and latents as
    a torch tensor that needs grad: the reference's latents."""
    ours, ref = pipes
    latents = np.random.default_rng(5).standard_normal((2, 4, 32, 32)).astype(np.float32)
    expected = ref("a cat", "blurry", 3, height=256, width=256, guidance_scale=4.5, num_images_per_prompt=2,
                   latents=torch.from_numpy(latents), output_type="latent", clean_caption=False).images.numpy()
    actual = ours("a cat", "blurry", 3, height=np.int64(256), width=np.int32(256), guidance_scale=np.float32(4.5),
                  num_images_per_prompt=np.int64(2), latents=torch.from_numpy(latents).requires_grad_(),
                  output_type="latent").images
    assert rel_l2(actual, expected) <= 1e-3
    with pytest.raises(TypeError, match="positional argument"):
        ours("a cat", "", 3, 256)


def test_the_references_output_mapping_and_attributes(pipes):
    """out["images"], out.to_tuple(), out.keys(), pipe.vae_scale_factor, pipe.to() of this process's device; the
    reference's offload and progress-bar switches say what studio does instead."""
    ours, ref = pipes
    out = ours("a cat", height=256, width=256, num_inference_steps=1, output_type="latent", seed=1)
    assert out["images"] is out.images and out.to_tuple()[0] is out.images and list(out.keys()) == ["images"]
    assert ours.vae_scale_factor == ref.vae_scale_factor == 8
    assert ours.to("cpu") is ours and ours.to(torch.device("cpu")) is ours
    assert ours.to("cpu:0") is ours and ours.to(torch.device("cpu", 0)) is ours  # torch's names of the CPU too
    with pytest.raises(ValueError, match="device 'GPU': this process already runs on CPU"):
        ours.to("cuda")
    with pytest.raises(ValueError, match="the dtype is chosen at load"):
        ours.to(torch.float16)
    with pytest.raises(AttributeError, match="no enable_model_cpu_offload\\(\\): the text encoder is released"):
        ours.enable_model_cpu_offload()
    with pytest.raises(AttributeError, match="^studio's pipeline has no disable_attention_slicing\\(\\): attention is "
                                             "chunked from memory_budget= only when it would not fit$"):
        ours.disable_attention_slicing()
    with pytest.raises(AttributeError, match="has no attribute 'unet'"):
        ours.unet


def test_the_output_is_a_mapping_of_its_fields_as_the_references():
    """As diffusers' BaseOutput: iterating, len, `in`, keys/values/items and dict() see the field names; an
    integer indexes the values (`"images" in out` compared the name with the array, and list(out) gave the
    images). The seed is studio's attribute, not a field of the reference's mapping."""
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

    images = np.zeros((1, 4, 4, 3), np.float32)
    reference, out = ImagePipelineOutput(images=images), PipelineOutput(images=images, seed=7)
    for o in (reference, out):
        assert "images" in o and "seed" not in o and 0 not in o and len(o) == 1 and list(o) == ["images"]
        assert list(o.keys()) == ["images"] and list(o.values())[0] is images
        assert list(o.items()) == [("images", images)]
        assert o[0] is o["images"] is images and o.to_tuple() == (images,) and dict(o).keys() == {"images"}
    assert out.seed == 7
    with pytest.raises(KeyError):
        out["seed"]


@pytest.mark.parametrize("name,instead", [
    ("enable_tiling", "pass vae_tiling=True to the pipeline's call (None, the default, tiles when the decode would "
                      "not fit)"),
    ("disable_tiling", "pass vae_tiling=False to the pipeline's call"),
    ("enable_slicing", "the pipeline decodes images one at a time already (vae_tiling= of its call tiles each)"),
    ("disable_slicing", "the pipeline decodes images one at a time, as its memory plan counts them")])
def test_the_references_vae_switches_say_what_studio_does_instead(pipes, name, instead):
    """diffusers' PixArt pipeline has no enable_vae_tiling: its users call pipe.vae.enable_tiling(). hasattr stays
    False, and the VAE's parameters and sub-cells are found as before."""
    ours, ref = pipes
    assert callable(getattr(ref.vae, name)) and not hasattr(ours.vae, name)
    with pytest.raises(AttributeError, match=f"^studio's AutoencoderKL has no {name}\\(\\): {re.escape(instead)}$"):
        getattr(ours.vae, name)()
    assert ours.vae.decoder.conv_in.weight.shape == tuple(ref.vae.decoder.conv_in.weight.shape)
    with pytest.raises(AttributeError, match="^The 'AutoencoderKL' object has no attribute 'tiling'.$"):
        ours.vae.tiling


def test_the_references_device_idiom(pipes):
    """torch.Generator(device=pipe.device) as diffusers' users write it: pipe.device is torch's spelling of this
    process's device (a string; studio needs no torch), and draws the reference's noise; pipe.dtype is MindSpore's."""
    import mindspore as ms
    ours, ref = pipes
    assert ours.device == str(ref.device) == "cpu" and ours.to(ours.device) is ours
    assert ours.dtype == ms.float32
    kwargs = dict(height=256, width=256, num_inference_steps=1, output_type="latent")
    expected = ref("a cat", generator=torch.Generator(device=ref.device).manual_seed(5), clean_caption=False,
                   **kwargs).images
    actual = ours("a cat", generator=torch.Generator(device=ours.device).manual_seed(5), **kwargs).images
    assert rel_l2(actual, np.asarray(expected)) <= 1e-3


def test_a_scheduler_object_is_refused_not_ignored(pipes):
    """diffusers code swapping pipe.scheduler would otherwise run the default sampler without a word."""
    from diffusers import DDIMScheduler
    with pytest.raises(ValueError, match="pass sampler='dpm\\+\\+', 'ddim' or 'euler' to a call"):
        pipes[0].scheduler = DDIMScheduler()
    with pytest.raises(AttributeError, match="its sampler settings are `pipe.sampler`"):
        pipes[0].scheduler


def test_prompt_embeds_from_the_reference_stand_for_the_prompts(pipes):
    """diffusers' encode_prompt output (padded to 300 tokens) passed as prompt_embeds, with or without the
    negative's: the same latents as diffusers from the same embeddings."""
    ours, ref = pipes
    latents = np.random.default_rng(7).standard_normal((2, 4, 32, 32)).astype(np.float32)
    kwargs = dict(height=256, width=256, num_inference_steps=2, output_type="latent")
    with torch.no_grad():
        embeds, mask, negative, negative_mask = ref.encode_prompt(["a cat", "a red boat"], negative_prompt="blurry",
                                                                  clean_caption=False)
    expected = ref(negative_prompt=None, prompt_embeds=embeds, prompt_attention_mask=mask,  # None: it asks so
                   negative_prompt_embeds=negative, negative_prompt_attention_mask=negative_mask,
                   latents=torch.from_numpy(latents), **kwargs).images
    actual = ours(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=negative,
                  negative_prompt_attention_mask=negative_mask, latents=latents, **kwargs).images
    assert rel_l2(actual, expected.numpy()) <= 1e-3
    mixed = ours(prompt_embeds=embeds.numpy(), prompt_attention_mask=mask.numpy(), negative_prompt="blurry",
                 latents=latents, **kwargs).images  # the negative encoded here
    assert rel_l2(mixed, expected.numpy()) <= 1e-3
    padded = ours(prompt_embeds=np.pad(embeds.numpy(), ((0, 0), (0, 20), (0, 0))),  # masked past 300: taken
                  prompt_attention_mask=np.pad(mask.numpy(), ((0, 0), (0, 20))), negative_prompt="blurry",
                  latents=latents, **kwargs).images
    np.testing.assert_array_equal(padded, mixed)
    with pytest.raises(ValueError, match="prompt_embeds needs prompt_attention_mask"):
        ours(prompt_embeds=embeds, **kwargs)
    with pytest.raises(ValueError, match="prompt_embeds have 7 channels; this model's text encoder gives 32"):
        ours(prompt_embeds=np.zeros((1, 4, 7)), prompt_attention_mask=np.ones((1, 4)), **kwargs)
    with pytest.raises(ValueError, match="pass prompt or prompt_embeds, not both"):
        ours("a cat", prompt_embeds=embeds, prompt_attention_mask=mask, **kwargs)


def test_given_masks_with_zeros_before_their_last_token_keep_every_token(pipes):
    """A prompt_attention_mask need not be ones then zeros: a token masked out in the middle, or a row padded
    on the left. The caption is cut after the last position any row attends to (it was cut after sum(mask)
    positions, which dropped real tokens), so the reference's latents come out."""
    ours, ref = pipes
    with torch.no_grad():
        embeds, mask, negative, negative_mask = ref.encode_prompt(["a red cat at night by the sea", "a boat"],
                                                                  negative_prompt="blurry", clean_caption=False)
    n = int(mask[1].sum())
    assert int(mask[0].sum()) < 20
    mask[0, 2] = 0  # a hole in the first row
    tokens = embeds[1, :n].clone()  # the second row's tokens moved right, zeros before them
    embeds[1], mask[1] = 0, 0
    embeds[1, 20:20 + n], mask[1, 20:20 + n] = tokens, 1
    latents = np.random.default_rng(11).standard_normal((2, 4, 32, 32)).astype(np.float32)
    kwargs = dict(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=negative,
                  negative_prompt_attention_mask=negative_mask, height=256, width=256, num_inference_steps=2,
                  output_type="latent")
    expected = ref(negative_prompt=None, latents=torch.from_numpy(latents), **kwargs).images.numpy()
    assert rel_l2(ours(latents=latents, **kwargs).images, expected) <= 1e-3


def test_a_given_mask_row_of_zeros_attends_to_every_position_as_in_the_reference(pipes):
    """A row of prompt_attention_mask or negative_prompt_attention_mask that attends to no token: the reference's
    -10000 bias is the same for all its L keys, so the row attends to them all, as a row of ones (studio's masked
    keys weigh 0 and were cut: 0.16 away). Beside rows of tokens, whose captions are cut after their last token."""
    ours, ref = pipes
    with torch.no_grad():
        embeds, mask, negative, negative_mask = ref.encode_prompt(["a cat", "a red boat"],
                                                                  negative_prompt=["blurry", "watermark"],
                                                                  clean_caption=False, max_sequence_length=40)
    assert mask.shape == (2, 40) and int(mask.sum(axis=1).max()) < 10
    negative_mask[0] = 0
    given = dict(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=negative,
                 negative_prompt_attention_mask=negative_mask)
    latents = np.random.default_rng(12).standard_normal((2, 4, 32, 32)).astype(np.float32)
    kwargs = dict(height=256, width=256, num_inference_steps=2, output_type="latent")
    expected = ref(negative_prompt=None, latents=torch.from_numpy(latents), **given, **kwargs).images.numpy()
    assert rel_l2(ours(latents=latents, **given, **kwargs).images, expected) <= 1e-3
    assert int(negative_mask.sum()) < 10  # the caller's mask is read, not changed
    mask[1] = 0  # in the prompts' mask too
    expected = ref(negative_prompt=None, latents=torch.from_numpy(latents), **given, **kwargs).images.numpy()
    assert rel_l2(ours(latents=latents, **given, **kwargs).images, expected) <= 1e-3
    with pytest.raises(ValueError, match="attends to position 302: at most 300 .*; a row of zeros attends to all"):
        ours(prompt_embeds=np.zeros((1, 302, 32)), prompt_attention_mask=np.zeros((1, 302)), **kwargs)


def test_bfloat16_features_masks_and_latents_are_taken_as_float32(pipes):
    """encode_prompt's features in bfloat16 (as a GPU or Ascend gives them) passed back as a MindSpore tensor or
    as its asnumpy() (numpy's bfloat16 from ml_dtypes, of kind 'V'): the latents of the same values in float32
    (they were refused as 'not a MindSpore array')."""
    import mindspore as ms

    ours, _ = pipes
    features, mask = ours.encode_prompt("a cat")
    latents = np.random.default_rng(5).standard_normal((1, 4, 32, 32)).astype(np.float32)
    as_bf16 = [ms.Tensor(a).astype(ms.bfloat16) for a in (features, mask.astype(np.float32), latents)]
    kwargs = dict(height=256, width=256, num_inference_steps=1, output_type="latent")
    expected = ours(prompt_embeds=as_bf16[0].astype(ms.float32).asnumpy(), prompt_attention_mask=mask,
                    latents=as_bf16[2].astype(ms.float32).asnumpy(), **kwargs).images
    assert as_bf16[0].asnumpy().dtype.kind == "V"  # not a kind of number numpy knows: what was refused
    for given in (as_bf16, [t.asnumpy() for t in as_bf16]):
        actual = ours(prompt_embeds=given[0], prompt_attention_mask=given[1], latents=given[2], **kwargs).images
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("name,value,dtype,shown", [("prompt_attention_mask", 0.5, np.float32, "0.5"),
                                                    ("negative_prompt_attention_mask", 2, np.int64, "2"),
                                                    ("negative_prompt_attention_mask", np.nan, np.float64, "nan")])
def test_a_mask_of_values_other_than_0_and_1_is_refused(pipes, name, value, dtype, shown):
    """The reference adds a fractional mask to the attention scores as a bias; studio's masks keep or drop a
    token, and cut 0.5 to 0 without a word. 0/1 as bool, int or float are taken."""
    ours, _ = pipes
    features, mask = ours.encode_prompt("a cat")
    bad = mask.astype(dtype)
    bad[0, 1] = value
    given = dict(prompt_embeds=features, prompt_attention_mask=mask, negative_prompt_embeds=features,
                 negative_prompt_attention_mask=mask)
    kwargs = dict(height=256, width=256, num_inference_steps=1, output_type="latent", seed=0)
    with pytest.raises(ValueError) as info:
        ours(**{**given, name: bad}, **kwargs)
    assert str(info.value) == (f"{name} must hold only 0 and 1 (or False and True; 1 for tokens, 0 for padding): "
                               f"{name}[0, 1] is {shown}")
    expected = ours(**given, **kwargs).images
    for ok in (mask.astype(bool), mask.astype(np.float64)):
        np.testing.assert_array_equal(ours(**{**given, name: ok}, **kwargs).images, expected)


def test_encode_prompt_checks_its_length_and_takes_it_by_keyword_only(pipes):
    """The reference's encode_prompt(prompt, True, ...) has do_classifier_free_guidance second: studio's
    takes max_sequence_length by keyword only, so that True is not read as a length of 1 token."""
    ours, _ = pipes
    for bad in (0, 301, True, None, 1.5):
        with pytest.raises(ValueError, match=re.escape(f"max_sequence_length must be an integer from 1 to 300 "
                                                       f"(PixArt-Sigma's caption length), got {bad!r}")):
            ours.encode_prompt("a cat", max_sequence_length=bad)
    with pytest.raises(TypeError):
        ours.encode_prompt("a cat", True)


def test_texts_of_the_same_tokens_share_an_embedding_cache_entry(pipes):
    """The features are the token ids': 'a dog', 'A DOG ' and 'a  dog' tokenize alike (lowercased, stripped, spaces
    folded) and are encoded once; another cut (max_sequence_length) of a long prompt is another entry."""
    from studio.pipeline import MemoryCache

    ours, _ = pipes
    ours.embedding_cache = cache = MemoryCache()
    try:
        first, _ = ours.encode_prompt("a dog")
        for same in ("A DOG ", "a  dog", ["a dog"]):
            np.testing.assert_array_equal(ours.encode_prompt(same)[0].asnumpy(), first.asnumpy())
        assert len(cache.entries) == 1
        with pytest.warns(UserWarning, match="^studio: 'a dog' is cut at 2 tokens"):
            ours.encode_prompt("a dog", max_sequence_length=2)
        assert len(cache.entries) == 2
    finally:
        ours.embedding_cache = None


def test_a_lone_surrogate_in_a_prompt_is_a_value_error(pipes):
    """The tokenizer raised a TypeError for it."""
    for args in (("a \ud800 cat",), ("a cat", "bad \udfff")):
        with pytest.raises(ValueError, match=re.escape("\\ud800 is half") if len(args) == 1 else "negative_prompt"):
            pipes[0](*args[:1], negative_prompt=args[1] if len(args) > 1 else "", num_inference_steps=1,
                     output_type="latent", height=256, width=256)


def test_encode_prompt_takes_one_prompt_as_a_string(pipes):
    features, mask = pipes[0].encode_prompt("a cat")
    expected, _ = pipes[0].encode_prompt(["a cat"])
    assert features.shape[0] == 1 and int(mask.sum()) == mask.shape[1]
    np.testing.assert_array_equal(features.asnumpy(), expected.asnumpy())


def test_size_conditioned_transformer_gets_resolution_and_aspect_ratio(tiny_dir, tmp_path, monkeypatch):
    """A transformer conditioned on size (PixArt-alpha's 1024 px model) receives the generation size, as
    PixArt-alpha's pipeline passes it: resolution (h, w) and aspect ratio h / w per row of the batch."""
    import json
    import shutil

    from safetensors.numpy import save_file

    from studio.models.transformer import PixArtTransformer2DModel, PixArtTransformerConfig
    from studio.tiny import random_weights
    folder = shutil.copytree(tiny_dir, tmp_path / "alpha")
    config = json.loads((folder / "transformer" / "config.json").read_text())
    config.update(use_additional_conditions=True, num_attention_heads=3, cross_attention_dim=48)  # width % 3 == 0
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    model = PixArtTransformer2DModel(PixArtTransformerConfig.from_dict(config))
    save_file(random_weights(model, seed=1), str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    seen = []
    original = PixArtTransformer2DModel.construct

    def spy(self, latents, timestep, context, mask=None, resolution=None, aspect_ratio=None):
        seen.append((resolution.asnumpy(), aspect_ratio.asnumpy()))
        return original(self, latents, timestep, context, mask, resolution, aspect_ratio)

    monkeypatch.setattr(PixArtTransformer2DModel, "construct", spy)
    pipe = PixArtSigmaPipeline.from_pretrained(folder)
    out = pipe("a cat", height=192, width=320, num_inference_steps=1, output_type="latent", seed=0).images
    assert out.shape == (1, 4, 24, 40) and np.isfinite(out).all()
    resolution, aspect = seen[0]
    np.testing.assert_array_equal(resolution, [[192.0, 320.0]] * 2)  # CFG: negative and positive rows
    np.testing.assert_allclose(aspect, [[0.6]] * 2, rtol=1e-6)


def test_text_encoder_released_by_default(tiny_dir):
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    pipe("a cat", height=256, width=256, num_inference_steps=1, output_type="latent", seed=0)
    assert pipe._text_encoder is None


def test_an_interrupted_call_releases_the_text_encoder_it_loaded(tiny_dir):
    """A call or encode_prompt stopped after T5 ran (Ctrl-C in a progress callback, a failing embedding cache)
    releases the whole T5 it loaded, as a finished one does."""
    from studio.pipeline import MemoryCache
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    weights = pipe._resident_bytes()  # the transformer's and the VAE's

    def stop(phase, done, total):
        if (phase, done) == ("text", 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe("a cat", height=256, width=256, num_inference_steps=1, output_type="latent", seed=0,
             stream_text_encoder=False, progress=stop)
    assert pipe._text_encoder is None and pipe._resident_bytes() == weights

    class FailingCache(MemoryCache):
        def put(self, key, features, mask):
            raise KeyboardInterrupt

    pipe.embedding_cache = FailingCache()
    with pytest.raises(KeyboardInterrupt):
        pipe.encode_prompt("a cat", stream=False)
    assert pipe._text_encoder is None and pipe._resident_bytes() == weights


def test_small_and_large_memory_budgets_give_the_same_latents(tiny_dir):
    """A budget small enough to chunk attention (and block the MLP) changes nothing but memory."""
    from studio.memory_plan import plan_generation
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir, keep_text_encoder=True)
    kwargs = dict(height=384, width=512, use_resolution_binning=False, num_inference_steps=3, seed=5,
                  output_type="latent")
    large = pipe("a red cat", memory_budget="16GiB", **kwargs).images
    small_budget = 24 * 2 ** 20
    denoise = plan_generation(pipe.transformer.config, pipe._t5_config, pipe.vae.config, 384, 512, 1,
                              small_budget).phases[1]
    assert denoise.chunks[0].mode(768, 768) == "query-chunked"  # 768 tokens of self-attention, chunked
    small = pipe("a red cat", memory_budget=small_budget, **kwargs).images
    assert np.abs(small - large).max() <= 1e-5 * np.abs(large).max()


def test_a_small_budget_runs_the_attention_its_plan_describes(tiny_dir, monkeypatch):
    """Denoising runs each cross-attention in its self-attention's row blocks against the trimmed caption:
    the plan's cross entry says so (its query block is self's, its keys at most MAX_TOKENS)."""
    from studio import memory
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    budget = 24 * 2 ** 20
    denoise = pipe.generation_plan(384, 512, 1, budget, True).phases[1]
    planned = {what: c for (what, *_), c in zip(denoise.attention, denoise.chunks)}
    assert planned["self"].mode(768, 768) == "query-chunked" and planned["cross"].q == planned["self"].q
    assert f"cross: query-chunked q={planned['self'].q} k<=300" in denoise.chunking()
    phase, calls = [None], []
    chunks = memory.attention_chunks
    monkeypatch.setattr(memory, "attention_chunks", lambda *a: calls.append((phase[0], a)) or chunks(*a))
    pipe("a red cat", height=384, width=512, use_resolution_binning=False, num_inference_steps=1, seed=5,
         output_type="latent", memory_budget=budget, progress=lambda name, *_: phase.__setitem__(0, name))
    cross = [(nq, nk) for name, (_, nq, nk, _, _) in calls if name == "denoise" and nk < 768]
    assert cross and max(nq for nq, _ in cross) == planned["cross"].q and max(nk for _, nk in cross) <= 300
    for name, a in calls:
        if name == "denoise":
            got, plan = chunks(*a), planned["cross" if a[2] < 768 else "self"]
            assert got.q <= plan.q and got.k <= plan.k


def test_the_device_generic_ops_compute_what_the_cpu_ops_do(tiny_dir, monkeypatch):
    """What GPU/Ascend run (backend's native ops, no fused CPU kernels, plain slicing) gives the CPU path's
    images, untiled and tiled: run on the CPU with `backend.on_cpu` answering False, it is tested here, where
    no accelerator is."""
    import mindspore as ms

    from studio import backend, kernels
    from studio.vae_tiling import decode_tiled, plan_tiles
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir, keep_text_encoder=True)
    kwargs = dict(negative_prompt="blurry", height=256, width=384, use_resolution_binning=False,
                  num_inference_steps=2, seed=4, output_type="np", memory_budget="4GiB")
    z = ms.Tensor(np.random.default_rng(5).standard_normal((1, 4, 32, 48)).astype(np.float32))
    plan = plan_tiles(pipe.vae.config, 32, 48, tile=16)  # six tiles: the plain slicing of the tiles' crops
    assert plan.grid == (2, 3)

    def run():
        return [pipe("a red cat", vae_tiling=tiled, **kwargs).images for tiled in (False, True)] + [
            decode_tiled(pipe.vae, z, plan).asnumpy()]
    cpu = run()
    monkeypatch.setattr(backend, "on_cpu", lambda: False)
    monkeypatch.setattr(kernels, "get", lambda name: pytest.fail(f"the fused CPU kernel {name} ran"))
    native = run()
    for a, b in zip(cpu, native, strict=True):
        assert rel_l2(b, a) <= 1e-5


def test_streamed_text_encoder_gives_the_same_latents(tiny_dir, monkeypatch):
    """T5 run block by block from its files (as budgets too small for the whole encoder do) changes nothing
    in the result; the whole encoder is then never loaded."""
    from studio.models import t5
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    kwargs = dict(negative_prompt="blurry", height=256, width=256, num_inference_steps=2, seed=3,
                  output_type="latent")
    whole = pipe(["a red cat", "a boat"], stream_text_encoder=False, **kwargs).images
    monkeypatch.setattr(t5.T5EncoderModel, "from_pretrained", None)  # loading it whole would now fail
    streamed = pipe(["a red cat", "a boat"], stream_text_encoder=True, **kwargs).images
    np.testing.assert_array_equal(streamed, whole)


def test_cached_prompts_encode_alone_streamed_or_whole(tiny_dir):
    """With an embedding cache each prompt is encoded on its own; the streamed encoder reads every block once
    for all of them and gives the same rows as the whole one, and a cached prompt skips the encoder."""
    import json

    class Cache(dict):
        def get(self, key):
            return super().get(json.dumps(key, sort_keys=True))

        def put(self, key, features, mask):
            self[json.dumps(key, sort_keys=True)] = (features, mask)

    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    prompts = ["a red fox asleep in deep snow", "snow", "a lighthouse at dusk"]
    pipe.embedding_cache = whole_cache = Cache()
    whole, mask = pipe.encode_prompt(prompts, stream=False)
    pipe.release_text_encoder()
    pipe.embedding_cache = Cache()
    streamed, streamed_mask = pipe.encode_prompt(prompts, stream=True)
    assert pipe._text_encoder is None and len(pipe.embedding_cache) == 3
    np.testing.assert_array_equal(streamed.asnumpy(), whole.asnumpy())
    np.testing.assert_array_equal(streamed_mask.asnumpy(), mask.asnumpy())
    cached, _ = pipe.encode_prompt(prompts[1:2])  # from the cache: the row a fresh encoding gives
    assert pipe._text_encoder is None
    pipe.embedding_cache = None
    fresh, _ = pipe.encode_prompt(prompts[1:2])
    np.testing.assert_array_equal(cached.asnumpy(), fresh.asnumpy())
    assert len(whole_cache) == 3


def test_memory_plan_streams_t5_unless_it_is_kept():
    """PixArt-Sigma XL at 1024^2: T5-XXL loaded whole needs ~20.7 GiB in the text phase, streamed (the
    default, unless the encoder is kept) its text phase fits 8 GiB."""
    from studio.memory import GiB
    from studio.memory_plan import plan_generation, t5_params, t5_streamed_params
    from studio.models.t5 import T5Config
    from studio.plan import PUBLISHED, SDXL_VAE
    from studio.errors import PlanError
    tr, t5 = PUBLISHED["PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"], T5Config()
    whole = plan_generation(tr, t5, SDXL_VAE, 1024, 1024, stream_text_encoder=False).phases[0]
    assert not whole.streamed and whole.peak > 20 * GiB
    assert not plan_generation(tr, t5, SDXL_VAE, 1024, 1024, keep_text_encoder=True).phases[0].streamed
    text = plan_generation(tr, t5, SDXL_VAE, 1024, 1024, budget=8 * GiB).phases[0]
    assert text.streamed and text.peak <= 8 * GiB and "t5: block by block" in text.chunking()
    assert plan_generation(tr, t5, SDXL_VAE, 1024, 1024).phases[0].streamed  # with no budget too
    assert whole.weights - text.weights == 4 * (t5_params(t5) - t5_streamed_params(t5))
    with pytest.raises(PlanError, match="text phase"):
        plan_generation(tr, t5, SDXL_VAE, 1024, 1024, budget=8 * GiB, stream_text_encoder=False)
    # a kept encoder is whole, and held through denoising beside the transformer and the VAE
    with pytest.raises(PlanError, match=r"the denoise phase needs the most \(weights 20\.33 GiB"):
        plan_generation(tr, t5, SDXL_VAE, 1024, 1024, budget=8 * GiB, keep_text_encoder=True)


def test_prompts_of_the_same_tokens_are_encoded_once(tiny_dir, monkeypatch):
    """Four images of one prompt and the default negative "" each (a list of prompts), or texts that tokenize
    alike: one pass over T5 per distinct token ids (each was encoded again, a pass over all T5's weights), and the
    same features as encoding each alone."""
    from studio.models.t5 import StreamedT5Encoder

    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    given, encode_each = [], StreamedT5Encoder.encode_each
    monkeypatch.setattr(StreamedT5Encoder, "encode_each", lambda self, inputs: given.append(len(inputs)) or
                        encode_each(self, inputs))
    pipe(["a cat"] * 4, height=64, width=64, num_inference_steps=1, seed=1, output_type="latent")
    assert given == [2]  # "a cat" and ""
    given.clear()
    features, _ = pipe.encode_prompt(["a cat", "A Cat", "a  cat", "a dog"])
    assert given == [2]
    np.testing.assert_array_equal(features.asnumpy()[:3], np.repeat(features.asnumpy()[:1], 3, axis=0))
    np.testing.assert_array_equal(features.asnumpy()[:1], pipe.encode_prompt("a cat")[0].asnumpy())


def test_encode_prompt_encodes_real_tokens_only(tiny_dir):
    """Features cut after the longest prompt's tokens equal the real positions of a full-length encoding."""
    import mindspore as ms

    from studio.text import preprocess, tokenize

    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir, keep_text_encoder=True)
    prompts = ["A red fox asleep in deep snow under a pale winter sky, soft light", "snow", ""]
    features, mask = pipe.encode_prompt(prompts)
    ids, full_mask = tokenize(pipe.tokenizer, [preprocess(p) for p in prompts], 300)
    counts = full_mask.sum(axis=1)
    assert 1 <= counts.min() < counts.max() < 300
    assert features.shape[:2] == mask.shape == (3, counts.max())
    np.testing.assert_array_equal(mask.asnumpy(), full_mask[:, :counts.max()])
    full = pipe.text_encoder(ms.Tensor(ids), ms.Tensor(full_mask)).asnumpy()  # (3, 300, C)
    for row, n in enumerate(counts):
        assert rel_l2(features.asnumpy()[row, :n], full[row, :n]) <= 1e-5


def test_2k_checkpoint_generates_at_its_bins_and_beyond(tmp_path):
    """A 2K checkpoint (sample_size 256): binning picks from the 2048 px table, the position code is the 2K
    model's (base 256 / 2 = 128 patches, interpolation scale 4), and 3840x2160 runs beyond the native bin
    (the native default size is tested on the 256 px checkpoint against diffusers)."""
    from studio import binning
    from studio.models.transformer import sincos_2d
    from studio.tiny import make_tiny
    pipe = PixArtSigmaPipeline.from_pretrained(make_tiny(tmp_path / "2k", sample_size=256))
    cfg = pipe.transformer.config
    assert (cfg.sample_size, cfg.pos_interpolation_scale) == (256, 4)
    h, w = binning.closest_bin(2160, 3840, binning.BIN_2048)
    binned = pipe("a cat", height=2160, width=3840, num_inference_steps=1, seed=0, output_type="latent").images
    assert binned.shape == (1, 4, h // 8, w // 8) and (h, w) == (1536, 2688)
    direct = pipe("a cat", height=2160, width=3840, use_resolution_binning=False, num_inference_steps=1, seed=0,
                  output_type="latent", memory_budget="1GiB").images
    assert direct.shape == (1, 4, 270, 480) and np.isfinite(direct).all()
    code = pipe.transformer.pos_embed.position_code(135, 240).asnumpy().reshape(135 * 240, -1)
    np.testing.assert_allclose(code, sincos_2d(cfg.inner_dim, 135, 240, 128, 4).reshape(135 * 240, -1), rtol=1e-6,
                               atol=1e-6)


def test_a_prompt_cut_at_the_token_limit_is_warned_about(pipes):
    """As the reference logs it: what was dropped, once per prompt; a prompt that fits says nothing."""
    ours, _ = pipes
    with pytest.warns(UserWarning, match="^studio: 'a red fox in the snow at night' is cut at 5 tokens, T5's limit "
                                         "here; dropped: 'x in the snow at night'$") as seen:
        ours.encode_prompt(["a red fox in the snow at night", "a cat"], max_sequence_length=5)
    assert len(seen) == 1
    with pytest.warns(UserWarning, match=r"^studio: 'a red\\nfox in the snow' is cut at 3 tokens, T5's limit here; "
                                         r"dropped: 'd fox in the snow'$"):  # one line
        ours.encode_prompt("a red\nfox in the snow", max_sequence_length=3)
    ours.encode_prompt(["a cat"], max_sequence_length=300)  # filterwarnings = error: would fail on a warning


def test_a_cut_prompt_is_warned_about_at_the_callers_line(pipes):
    """The warning names the line that called studio (encode_prompt, a call, encode_ahead), not one inside it."""
    from studio.pipeline import MemoryCache

    ours, _ = pipes
    calls = [lambda: ours.encode_prompt("a red fox in the snow", max_sequence_length=3),
             lambda: ours("a red fox in the snow", max_sequence_length=3, height=256, width=256,
                          num_inference_steps=1, output_type="latent"),
             lambda: ours.encode_ahead("a red fox in the snow at dusk", max_sequence_length=3)]
    ours.embedding_cache = MemoryCache()
    try:
        for call in calls:
            with pytest.warns(UserWarning, match="is cut at 3 tokens") as seen:
                call()
            assert [(w.filename, w.lineno) for w in seen] == [(__file__, call.__code__.co_firstlineno)]
    finally:
        ours.embedding_cache = None


def test_calls_from_two_threads_run_one_at_a_time_and_give_the_same_images(tiny_dir):
    """MindSpore's CPU kernels crashed with two threads generating at once: the calls wait for each other."""
    import threading
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    kwargs = dict(height=256, width=256, num_inference_steps=2, seed=3, output_type="latent")
    expected = pipe("a cat", **kwargs).images
    results = []
    threads = [threading.Thread(target=lambda: results.append(pipe("a cat", **kwargs).images)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and all(np.array_equal(r, expected) for r in results)


def test_encode_prompt_streams_and_keeps_nothing_unless_the_pipeline_keeps_t5(tiny_dir):
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    streamed, _ = pipe.encode_prompt("a cat")
    assert pipe._text_encoder is None
    whole, _ = pipe.encode_prompt("a cat", stream=False)  # loaded whole for the call, then released
    assert pipe._text_encoder is None
    np.testing.assert_array_equal(streamed.asnumpy(), whole.asnumpy())
    kept = PixArtSigmaPipeline.from_pretrained(tiny_dir, keep_text_encoder=True)
    kept.encode_prompt("a cat")
    assert kept._text_encoder is not None


def test_decode_takes_the_latents_a_call_returns(pipes):
    """pipe.decode of a call's output_type="latent" images (numpy; or torch, as latents= takes them) gives the
    pixels of output_type="np" from the same seed, brought to [0, 1]; other values are one-line errors."""
    import mindspore as ms

    from studio.errors import InputError
    from studio.pipeline import to_unit_range

    ours = pipes[0]
    kwargs = dict(height=128, width=256, num_inference_steps=2, seed=7, use_resolution_binning=False)
    latents = ours("a fox", output_type="latent", **kwargs).images  # (1, 4, 16, 32)
    expected = ours("a fox", output_type="np", **kwargs).images  # (1, 128, 256, 3)
    for given in (latents, torch.from_numpy(latents), ms.Tensor(latents)):
        assert np.array_equal(to_unit_range(ours.decode(given)).transpose(0, 2, 3, 1), expected)
    with pytest.raises(InputError, match=re.escape("decode: latents have shape (4, 16, 32), expected (N, 4, h, w)")):
        ours.decode(latents[0])
    for empty in (latents[:, :, :0], ms.Tensor(latents[:0])):
        with pytest.raises(InputError, match=r"^decode: latents have shape \(\d+, 4, \d+, \d+\), expected "
                                             r"\(N, 4, h, w\), none of them 0$"):
            ours.decode(empty)
    for wrong in ("latents", None, [[1.0], [2.0, 3.0]]):
        with pytest.raises(InputError, match="^decode: latents must be a numpy, torch or MindSpore array "
                                             rf"\(N, 4, h, w\), got {re.escape(repr(wrong))}$"):
            ours.decode(wrong)


def test_a_pipeline_is_not_pickled_but_copies(pipes):
    """pickle (a process pool's arguments) says what to do instead, in pickle's TypeError for what it can't
    pickle (its MindSpore operators); copy.deepcopy gives a pipeline of its own weights, copy.copy one sharing
    them."""
    ours = pipes[0]
    with pytest.raises(TypeError, match=r"^a PixArtSigmaPipeline cannot be pickled \(its MindSpore operators "
                                        r"cannot\): load it in each worker process \(PixArtSigmaPipeline\."
                                        r"from_pretrained\); copy\.deepcopy copies it in one$"):
        pickle.dumps(ours)
    kwargs = dict(height=128, width=128, num_inference_steps=1, seed=7, use_resolution_binning=False,
                  output_type="latent")
    expected = ours("a fox", **kwargs).images
    copied = copy.deepcopy(ours)
    assert type(copied) is type(ours) and copied.transformer is not ours.transformer
    assert np.array_equal(copied("a fox", **kwargs).images, expected)
    for _, weight in copied.transformer.parameters_and_names():
        weight.set_data(weight * 0)
    assert np.array_equal(ours("a fox", **kwargs).images, expected)  # the copy's weights are its own
    assert not np.array_equal(copied("a fox", **kwargs).images, expected)
    assert copy.copy(ours).transformer is ours.transformer


def test_a_lent_embedding_cache_serves_its_threads_calls_and_leaves_the_pipelines(tiny_dir):
    """render's way to cache a layout's prompts (`lent_embedding_cache`): encode_ahead fills the lent cache, calls in
    the same thread find the prompts there, another thread's calls don't see it, and pipe.embedding_cache is not
    touched. encode_ahead with no cache at all says so."""
    import threading

    from studio.errors import InputError
    from studio.pipeline import MemoryCache, lent_embedding_cache

    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    no_cache = "^encode_ahead puts features into an embedding cache: set pipe.embedding_cache first$"
    with pytest.raises(InputError, match=no_cache):
        pipe.encode_ahead(["a cat"])
    cache, elsewhere = MemoryCache(), []

    def encode_elsewhere():
        try:
            pipe.encode_ahead(["a dog"])
        except InputError as e:
            elsewhere.append(str(e))

    with lent_embedding_cache(pipe, cache):
        assert pipe.encode_ahead(["a cat", ""]) == 2 and pipe.encode_ahead(["a cat"]) == 0
        assert pipe.encode_ahead("a cat") == 0 and pipe.encode_ahead([]) == 0  # a string is one prompt
        with pytest.raises(InputError, match=r"^prompts must be a string or a non-empty list of strings, got \[None\]$"):
            pipe.encode_ahead([None])
        assert len(cache.entries) == 2 and pipe.embedding_cache is None
        [key] = [k for k, (features, _) in cache.entries.items() if features.shape[1] > 1]  # 'a cat', not ''
        cache.entries[key] = np.zeros_like(cache.entries[key][0]), cache.entries[key][1]
        features, _ = pipe.encode_prompt("a cat")
        assert not features.asnumpy().any()  # the lent cache's
        thread = threading.Thread(target=encode_elsewhere)
        thread.start()
        thread.join()
    assert elsewhere == [no_cache[1:-1]] and pipe.embedding_cache is None
    assert pipe.encode_prompt("a cat")[0].asnumpy().any()
    with pytest.raises(InputError, match=no_cache):
        pipe.encode_ahead(["a cat"])


@pytest.mark.parametrize("images", [-2, 0, 2.5, True])
def test_plan_refuses_an_image_count_that_is_not_a_positive_integer(tiny_dir, images):
    from studio import pipeline
    from studio.errors import InputError
    with pytest.raises(InputError, match=f"^images must be a positive integer, got {re.escape(repr(images))}$"):
        pipeline.plan(tiny_dir, 512, 512, images=images, memory_budget="1GiB")


def test_the_automatic_budget_is_the_first_calls(tiny_dir, monkeypatch):
    """MindSpore's CPU pool keeps what a call used, which the host's free memory no longer counts: worked out at
    each call, the automatic budget shrank call by call (an identical call refused); it is the first call's."""
    from studio import backend

    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    free = iter([9 << 30, 8 << 30, 7 << 30])
    monkeypatch.setattr(backend, "free_memory", lambda: next(free))
    budgets = []
    plan = pipe.generation_plan
    monkeypatch.setattr(pipe, "generation_plan", lambda *a, **k: budgets.append(a[3]) or plan(*a, **k))
    for _ in range(2):
        pipe("a fox", height=64, width=64, num_inference_steps=1, seed=1, use_resolution_binning=False,
             output_type="latent")
    pipe("a fox", height=64, width=64, num_inference_steps=1, seed=1, use_resolution_binning=False,
         output_type="latent", memory_budget="1GiB")
    pipe("a fox", height=64, width=64, num_inference_steps=1, seed=1, use_resolution_binning=False,
         output_type="latent", memory_budget="auto")  # None's, written out (the CLI's --memory-budget auto)
    assert budgets == [(8 << 30) + pipe._resident_bytes()] * 2 + [1 << 30] + [(8 << 30) + pipe._resident_bytes()]
    assert next(free) == 8 << 30  # read once: 9 GiB free less the 1 GiB margin
