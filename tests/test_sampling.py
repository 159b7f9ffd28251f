"""studio.sampling against the diffusers schedulers: same config, same fake model, same initial noise."""

import dataclasses
import json
import math
import re

import mindspore as ms
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from mindspore import ops

from studio.errors import ConfigError, InputError
from studio.sampling import (SamplerConfig, StepsError, _alphas_cumprod, _dpm_schedule, _train_sigmas,
                             init_noise_sigma, sample, timesteps_and_sigmas)
from tests.util import rel_l2

# PixArt-alpha/PixArt-Sigma-XL-2-1024-MS, scheduler/scheduler_config.json, verbatim.
PIXART_SIGMA_JSON = """{
  "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.22.0.dev0",
  "algorithm_type": "dpmsolver++", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
  "dynamic_thresholding_ratio": 0.995, "euler_at_final": false, "lambda_min_clipped": -Infinity,
  "lower_order_final": true, "num_train_timesteps": 1000, "prediction_type": "epsilon",
  "sample_max_value": 1.0, "solver_order": 2, "solver_type": "midpoint", "steps_offset": 0,
  "thresholding": false, "timestep_spacing": "linspace", "trained_betas": null, "use_karras_sigmas": false,
  "use_lu_lambdas": false, "variance_type": null
}"""
PIXART = json.loads(PIXART_SIGMA_JSON)
REFERENCE = {"dpm++": DPMSolverMultistepScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
TOL = 1e-4


def reference_scheduler(d: dict):
    return {c.__name__: c for c in REFERENCE.values()}[d["_class_name"]].from_config(d)


def noise(seed=0):
    return np.random.default_rng(seed).standard_normal((2, 4, 8, 8)).astype(np.float32)


# The fake model, the same function in each framework: the exact noise predictor for unit-Gaussian
# data, sqrt(1 - alpha_bar(t)) x (alpha_bar of the linear betas in closed form), plus a nonlinear term.
# Being a real denoiser keeps the data prediction O(1), so a wrong final sigma or a wrong DDIM end point
# moves the result by > 1e-3 (test_fake_model_tells_variants_apart); tanh(0.5 x + 0.001 t) alone lets
# the data prediction grow to x / alpha and hides such errors below 1e-4.
def _noise_scale(t) -> float:
    t = max(float(t), 0.0)  # timestep -1 ("trailing" spacing with a lambda_min_clipped) is at the noise of 0
    return math.sqrt(-math.expm1(-(1e-4 * t + (0.02 - 1e-4) * t * t / 1998)))


def torch_model(x, t):
    return _noise_scale(t) * x + 0.3 * torch.tanh(0.5 * x + 0.001 * float(t))


def ms_model(x, t):
    return _noise_scale(t) * x + 0.3 * ops.tanh(0.5 * x + 0.001 * t)


def reference_loop(scheduler, num_steps, z):
    scheduler.set_timesteps(num_steps)
    x = torch.from_numpy(z) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(torch_model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return scheduler.timesteps.numpy(), x.numpy()


def studio_loop(config, num_steps, z):
    x = ms.Tensor(z) * init_noise_sigma(config, num_steps)
    return sample(ms_model, x, config, num_steps).asnumpy()


def check_parity(d: dict, config: SamplerConfig, num_steps: int, timesteps_exact: bool = True, tol: float = TOL):
    ref_timesteps, ref_x = reference_loop(reference_scheduler(d), num_steps, noise())
    timesteps = timesteps_and_sigmas(config, num_steps).timesteps
    if timesteps_exact:
        assert timesteps.dtype == ref_timesteps.dtype
        np.testing.assert_array_equal(timesteps, ref_timesteps)
    else:
        np.testing.assert_allclose(timesteps, ref_timesteps, rtol=0, atol=1e-2)
    x = studio_loop(config, num_steps, noise())
    err = rel_l2(x, ref_x)
    assert err <= tol, f"rel L2 {err:.3g}"
    return err


DPM_CASES = [  # (overrides of the published config, steps)
    ({}, 20),
    ({}, 3),
    ({}, 1),
    ({}, 14),
    ({"solver_order": 1}, 3),
    ({"solver_order": 3}, 20),
    ({"solver_order": 3}, 14),  # third order up to the last two steps: second, then first order
    ({"solver_order": 3}, 3),
    ({"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}, 6),  # third order to the end
    ({"solver_order": 3, "use_karras_sigmas": True, "prediction_type": "v_prediction"}, 16),
    ({"lower_order_final": False}, 5),
    ({"euler_at_final": True, "final_sigmas_type": "sigma_min"}, 20),
    ({"final_sigmas_type": "sigma_min"}, 20),
    ({"final_sigmas_type": "sigma_min"}, 6),
    ({"solver_type": "heun"}, 10),
    ({"timestep_spacing": "leading"}, 20),
    ({"timestep_spacing": "leading", "steps_offset": 1}, 7),
    ({"timestep_spacing": "trailing"}, 20),
    ({"use_karras_sigmas": True}, 20),
    # Karras sigmas replace the spaced timesteps, which would reach 1000 here (test_karras_timesteps_are_...)
    ({"use_karras_sigmas": True, "timestep_spacing": "leading", "steps_offset": 60}, 20),
    ({"lambda_min_clipped": -4.0}, 10),
    ({"timestep_spacing": "trailing", "lambda_min_clipped": -4.0}, 30),  # diffusers runs 27 steps
    ({"timestep_spacing": "trailing", "lambda_min_clipped": -4.0, "final_sigmas_type": "sigma_min"}, 18),  # to t=-1
    ({"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}, 1000),  # the last step has zero length
    ({"num_train_timesteps": 1}, 1),
    ({"beta_schedule": "scaled_linear", "beta_end": 0.012, "beta_start": 0.00085}, 8),
    ({"prediction_type": "v_prediction"}, 8),
    ({"prediction_type": "sample"}, 8),
    ({"use_karras_sigmas": True, "prediction_type": "sample"}, 14),  # 1e-3 off with float64 alphas_cumprod
    ({"solver_type": "bh2"}, 6),  # a UniPC config's, carried over: diffusers runs it as midpoint
    ({"algorithm_type": "deis", "final_sigmas_type": "sigma_min"}, 8),  # diffusers runs DEIS as dpmsolver++
    ({"algorithm_type": "deis", "final_sigmas_type": "sigma_min", "solver_type": "logrho"}, 5),
]


@pytest.mark.parametrize("overrides,steps", DPM_CASES, ids=[f"{o}-{s}" for o, s in DPM_CASES])
def test_dpmpp_matches_diffusers(overrides, steps):
    d = {**PIXART, **overrides}
    check_parity(d, SamplerConfig.from_scheduler_config(d), steps)


OTHER_CASES = [  # (sampler, extra keys in the shared config, steps)
    ("ddim", {}, 20),
    ("ddim", {}, 3),
    ("ddim", {"timestep_spacing": "leading"}, 20),
    ("ddim", {"timestep_spacing": "leading", "steps_offset": 1}, 7),
    ("ddim", {"timestep_spacing": "trailing"}, 12),
    ("ddim", {"set_alpha_to_one": False, "clip_sample": False}, 10),
    ("ddim", {"clip_sample_range": 0.5}, 10),
    ("ddim", {"prediction_type": "v_prediction"}, 8),
    ("ddim", {"prediction_type": "sample", "clip_sample": False}, 8),
    ("ddim", {"num_train_timesteps": 1}, 1),
    ("euler", {}, 20),
    ("euler", {}, 3),
    ("euler", {"timestep_spacing": "leading"}, 20),
    ("euler", {"timestep_spacing": "leading", "steps_offset": 1}, 7),
    ("euler", {"timestep_spacing": "trailing"}, 12),
    ("euler", {"final_sigmas_type": "sigma_min"}, 10),
    ("euler", {"prediction_type": "v_prediction"}, 8),
    ("euler", {"num_train_timesteps": 1}, 1),
]


@pytest.mark.parametrize("name,extra,steps", OTHER_CASES, ids=[f"{n}-{e}-{s}" for n, e, s in OTHER_CASES])
def test_switched_sampler_matches_diffusers_from_config(name, extra, steps):
    """cfg.with_sampler(name) runs what REFERENCE[name].from_config(dpm_scheduler.config) runs."""
    dpm = DPMSolverMultistepScheduler.from_config({**PIXART, **extra})
    switched = REFERENCE[name].from_config(dpm.config)
    config = SamplerConfig.from_scheduler_config({**PIXART, **extra}).with_sampler(name)
    check_parity(dict(switched.config), config, steps)


def test_euler_karras_matches_diffusers():
    """Karras timesteps of Euler are fractional: float64 vs the reference's float32 schedule moves them slightly."""
    d = {**PIXART, "_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}
    check_parity(d, SamplerConfig.from_scheduler_config(d), 15, timesteps_exact=False)


MUTATIONS = [  # (class, overrides, steps, a wrong setting for studio)
    ("DPMSolverMultistepScheduler", {}, 20, {"solver_type": "heun"}),
    ("DPMSolverMultistepScheduler", {}, 20, {"solver_order": 1}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, 20, {"solver_order": 2}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "lower_order_final": False}, 6, {"lower_order_final": True}),
    ("DPMSolverMultistepScheduler", {}, 20, {"final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}, 6, {"lower_order_final": False}),
    ("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}, 20, {"euler_at_final": True}),
    ("DDIMScheduler", {}, 20, {"clip_sample": False}),
    ("DDIMScheduler", {"clip_sample": False}, 10, {"set_alpha_to_one": False}),
    ("EulerDiscreteScheduler", {}, 20, {"final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {"use_lu_lambdas": True}, 10,  # rounded timesteps, not truncated
     {"use_lu_lambdas": False, "use_exponential_sigmas": True}),
    ("DPMSolverMultistepScheduler", {"beta_schedule": "squaredcos_cap_v2"}, 10, {"beta_schedule": "linear"}),
    ("DPMSolverMultistepScheduler", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}, 10,
     {"rescale_betas_zero_snr": False}),
    ("EulerDiscreteScheduler", {"interpolation_type": "log_linear"}, 10, {"interpolation_type": "linear"}),
    ("EulerDiscreteScheduler", {"use_exponential_sigmas": True}, 10, {"use_exponential_sigmas": False,
                                                                      "use_karras_sigmas": True}),
]


@pytest.mark.parametrize("class_name,overrides,steps,wrong", MUTATIONS)
def test_fake_model_tells_variants_apart(class_name, overrides, steps, wrong):
    """The parity tests have teeth: one wrong setting moves the result far beyond TOL."""
    d = {**PIXART, "_class_name": class_name, **overrides}
    _, ref_x = reference_loop(reference_scheduler(d), steps, noise())
    config = dataclasses.replace(SamplerConfig.from_scheduler_config(d), **wrong)
    assert rel_l2(studio_loop(config, steps, noise()), ref_x) > 10 * TOL


def test_schedule_sigmas_match_diffusers():
    for name in ("dpm++", "euler"):
        ref = REFERENCE[name].from_config(PIXART)
        ref.set_timesteps(20)
        s = timesteps_and_sigmas(SamplerConfig.from_scheduler_config(PIXART).with_sampler(name), 20)
        np.testing.assert_allclose(np.append(s.sigmas, s.sigmas_next[-1]), ref.sigmas.numpy(), rtol=1e-4)
        np.testing.assert_allclose(s.sigmas_next[:-1], s.sigmas[1:], rtol=0)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_init_noise_sigma(spacing):
    d = {**PIXART, "timestep_spacing": spacing}
    for name in REFERENCE:
        ref = REFERENCE[name].from_config(DPMSolverMultistepScheduler.from_config(d).config)
        ref.set_timesteps(10)
        got = init_noise_sigma(SamplerConfig.from_scheduler_config(d).with_sampler(name), 10)
        assert got == pytest.approx(float(ref.init_noise_sigma), rel=1e-5)


def test_published_config():
    c = SamplerConfig.from_scheduler_config(PIXART)
    assert (c.sampler, c.solver_order, c.solver_type, c.timestep_spacing, c.final_sigmas_type) == (
        "dpm++", 2, "midpoint", "linspace", "zero")
    assert c.lambda_min_clipped == -math.inf
    assert c == SamplerConfig(given=c.given)  # the dataclass defaults are PixArt-Sigma's


def test_with_sampler_follows_from_config_defaults():
    # PixArt's config sets timestep_spacing, so DDIM keeps "linspace"; DDIM's own keys take its defaults.
    ddim = SamplerConfig.from_scheduler_config(PIXART).with_sampler("ddim")
    assert (ddim.sampler, ddim.timestep_spacing, ddim.clip_sample, ddim.set_alpha_to_one) == (
        "ddim", "linspace", True, True)
    # A config that leaves timestep_spacing out gets each class's default.
    bare = {k: v for k, v in PIXART.items() if k != "timestep_spacing"}
    assert SamplerConfig.from_scheduler_config(bare).with_sampler("ddim").timestep_spacing == "leading"
    assert SamplerConfig.from_scheduler_config(bare).with_sampler("euler").timestep_spacing == "linspace"
    # Keys only the DPM solver reads survive a round trip through DDIM, as diffusers' hidden config keys do.
    d = {**PIXART, "solver_order": 1, "final_sigmas_type": "sigma_min"}
    back = SamplerConfig.from_scheduler_config(d).with_sampler("ddim").with_sampler("dpm++")
    assert back == SamplerConfig.from_scheduler_config(d)
    ref = DPMSolverMultistepScheduler.from_config(
        DDIMScheduler.from_config(DPMSolverMultistepScheduler.from_config(d).config).config)
    assert (ref.config.solver_order, ref.config.final_sigmas_type) == (back.solver_order, back.final_sigmas_type)
    # A diffusers `.config` lists defaulted keys in _use_default_values; those do not carry over.
    ddim_config = {**DDIMScheduler().config, "_class_name": "DDIMScheduler"}
    assert "timestep_spacing" in ddim_config["_use_default_values"]
    from_ref = SamplerConfig.from_scheduler_config(ddim_config).with_sampler("dpm++")
    assert from_ref.timestep_spacing == "linspace"


def test_with_sampler_of_directly_built_config_keeps_its_settings():
    direct = SamplerConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, solver_order=1)
    ddim = direct.with_sampler("ddim")
    assert (ddim.beta_schedule, ddim.beta_start, ddim.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert ddim.with_sampler("dpm++") == direct.with_sampler("dpm++")
    assert direct.with_sampler("dpm++").solver_order == 1


def test_callback_counts_steps():
    seen = []
    sample(ms_model, ms.Tensor(noise()), SamplerConfig(), 4, callback=lambda i, n: seen.append((i, n)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_callback_counts_the_steps_run_where_diffusers_runs_fewer_than_asked():
    d = {**PIXART, "timestep_spacing": "trailing", "lambda_min_clipped": -4.0}
    ref = reference_scheduler(d)
    ref.set_timesteps(30)
    assert len(ref.timesteps) == 27
    seen = []
    sample(ms_model, ms.Tensor(noise()), SamplerConfig.from_scheduler_config(d), 30,
           callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 27) for i in range(27)]


@pytest.mark.parametrize("key,value", [
    ("thresholding", True),
    ("algorithm_type", "dpmsolver"),
    ("algorithm_type", "sde-dpmsolver++"),
    ("use_beta_sigmas", True),
    ("use_flow_sigmas", True),
    ("variance_type", "learned_range"),
    ("solver_order", 4),
    ("solver_type", "taylor"),
    ("beta_schedule", "sigmoid"),
    ("trained_betas", [0.1, 0.2]),
    ("timestep_spacing", "uniform"),
    ("prediction_type", "flow_prediction"),
    ("final_sigmas_type", "sigma_max"),
    ("no_such_key", 1),
    ("_class_name", "PNDMScheduler"),
])
def test_unsupported_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        SamplerConfig.from_scheduler_config({**PIXART, key: value})


def test_unsupported_setting_is_caught_when_switching():
    d = {**PIXART, "timestep_type": "continuous", "prediction_type": "v_prediction"}  # harmless to DPM, not to Euler
    config = SamplerConfig.from_scheduler_config(d)
    with pytest.raises(ConfigError, match="timestep_type"):
        config.with_sampler("euler")


@pytest.mark.parametrize("overrides", [{}, {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                                "beta_end": 0.012, "num_train_timesteps": 1001},
                                       {"num_train_timesteps": 1}, {"num_train_timesteps": 2},
                                       {"beta_start": 0.01, "beta_end": 0.01},  # constant betas: diffusers runs them
                                       {"beta_schedule": "squaredcos_cap_v2"},
                                       {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 7}])
def test_training_noise_levels_are_diffusers_float32_bits(overrides):
    d = {**PIXART, **overrides}
    ref = DPMSolverMultistepScheduler.from_config(d)
    config = SamplerConfig.from_scheduler_config(d)
    np.testing.assert_array_equal(_alphas_cumprod(config), ref.alphas_cumprod.numpy())
    # the same to an ulp: torch's float32 square root is not always correctly rounded
    np.testing.assert_allclose(_train_sigmas(_alphas_cumprod(config)),
                               (((1 - ref.alphas_cumprod) / ref.alphas_cumprod) ** 0.5).numpy(), rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("beta_start,beta_end", [(0.0, 0.02), (-0.1, 0.02), (0.0001, 1.0), (0.0001, 2.0), (0.03, 0.02)])
def test_betas_outside_zero_to_one_or_decreasing_are_refused(beta_start, beta_end):
    """beta_end 1 or more makes alpha_bar 0 and the noise levels infinite; beta_start 0 a noise level of 0."""
    with pytest.raises(ConfigError) as info:
        SamplerConfig.from_scheduler_config({**PIXART, "beta_start": beta_start, "beta_end": beta_end})
    assert str(info.value) == (f"scheduler config: beta_start={beta_start!r} and beta_end={beta_end!r} must satisfy "
                               "0 < beta_start <= beta_end < 1")


@pytest.mark.parametrize("name,steps", [("dpm++", 999), ("ddim", 1000)])
def test_timesteps_past_the_last_training_step_are_refused(name, steps):
    config = SamplerConfig.from_scheduler_config({**PIXART, "timestep_spacing": "leading", "steps_offset": 1})
    config = config.with_sampler(name)
    assert timesteps_and_sigmas(config, steps - 1).timesteps.max() == 999  # one step fewer: the last one
    with pytest.raises(InputError, match=f"^{re.escape(name)} with timestep_spacing 'leading' and steps_offset 1 "
                                         f"reaches timestep 1000 at {steps} steps, past the last training timestep "
                                         "999; use fewer steps$"):
        timesteps_and_sigmas(config, steps)


@pytest.mark.parametrize("offset,steps", [(1, 999), (60, 20)])
def test_karras_timesteps_are_not_refused_for_the_spaced_ones_they_replace(offset, steps):
    d = {**PIXART, "use_karras_sigmas": True, "timestep_spacing": "leading", "steps_offset": offset}
    ref = reference_scheduler(d)
    ref.set_timesteps(steps)
    schedule = timesteps_and_sigmas(SamplerConfig.from_scheduler_config(d), steps)
    np.testing.assert_array_equal(schedule.timesteps, ref.timesteps.numpy())
    np.testing.assert_allclose(np.append(schedule.sigmas, schedule.sigmas_next[-1]), ref.sigmas.numpy(), rtol=1e-6)
    spaced = SamplerConfig.from_scheduler_config({**d, "use_karras_sigmas": False})
    with pytest.raises(InputError, match=f"reaches timestep 1000 at {steps} steps"):
        timesteps_and_sigmas(spaced, steps)


def test_bad_sampler_name_and_steps():
    with pytest.raises(InputError, match="heun"):
        SamplerConfig().with_sampler("heun")
    with pytest.raises(InputError, match="num_steps"):
        timesteps_and_sigmas(SamplerConfig(), 0)


def test_dpmpp_refuses_a_schedule_that_repeats_a_timestep_before_calling_the_model():
    """linspace spacing over 1000 training steps rounds two of 1000 timesteps to 500: a second-order step
    of zero length, which the solver divides by (diffusers returns NaN there)."""
    config = SamplerConfig.from_scheduler_config(PIXART)
    assert np.sum(_dpm_schedule(config, 1000, _alphas_cumprod(config)).timesteps == 500) == 2

    def model(x, t):
        raise AssertionError("the model was called")
    with pytest.raises(InputError, match="dpm\\+\\+ with timestep_spacing 'linspace' visits timestep 500 twice "
                                         "at 1000 steps; use fewer steps"):
        sample(model, ms.Tensor(noise()), config, 1000)


@pytest.mark.parametrize("class_name", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_a_karras_sigma_max_above_the_training_range_is_refused_where_diffusers_fails(class_name):
    """sigma_max above the largest training sigma maps the first Karras sigmas to timestep 999 alike; diffusers
    then starts at the second of them, skips a step and fails at the end. A sigma_max within the range runs."""
    d = {**PIXART, "_class_name": class_name, "use_karras_sigmas": True, "sigma_max": 1000.0}
    with pytest.raises(IndexError):
        reference_loop(reference_scheduler(d), 14, noise())
    config = SamplerConfig.from_scheduler_config(d)
    largest = _train_sigmas(_alphas_cumprod(config))[-1]
    with pytest.raises(InputError, match=f"^{re.escape(config.sampler)} starts at timestep 999 twice at 14 steps: "
                                         f"sigma_max 1000 is above the largest training noise level {largest:.6g}; "
                                         "lower it$"):
        timesteps_and_sigmas(config, 14)
    within = SamplerConfig.from_scheduler_config({**d, "sigma_max": float(largest) * 0.9})
    assert len(set(timesteps_and_sigmas(within, 14).timesteps.tolist())) == 14


ZERO_LENGTH = [  # (a setting whose update divides by its step's length, the way out, overrides, steps)
    ({"solver_type": "heun"}, "solver_type 'midpoint'", {"timestep_spacing": "trailing"}, 1000),
    ({"solver_type": "heun"}, "solver_type 'midpoint'", {"use_karras_sigmas": True}, 20),
    ({"solver_order": 3}, "solver_order 2", {"use_karras_sigmas": True}, 20),
    # the last Lu sigma, exp of its float32 log, an ulp from sigma_min where diffusers has them equal
    ({"solver_type": "heun"}, "solver_type 'midpoint'", {"use_lu_lambdas": True, "beta_schedule": "squaredcos_cap_v2"},
     20),
    ({"solver_order": 3}, "solver_order 2",
     {"use_lu_lambdas": True, "beta_schedule": "squaredcos_cap_v2", "lower_order_final": False}, 7),
]


@pytest.mark.parametrize("setting,fix,overrides,steps", ZERO_LENGTH)
def test_dpmpp_refuses_a_step_of_zero_length_where_diffusers_returns_nan(setting, fix, overrides, steps):
    """With final_sigmas_type 'sigma_min' the last step can go from sigma_min to itself: the midpoint update
    leaves the sample as it is there (test_dpmpp_matches_diffusers), heun's and the third-order one divide 0 by 0."""
    d = {**PIXART, "final_sigmas_type": "sigma_min", **setting, **overrides}
    assert np.isnan(reference_loop(reference_scheduler(d), steps, noise())[1]).all()
    (key, value), = setting.items()
    named = f"{key} {value!r}" if isinstance(value, str) else f"{key} {value}"
    update = "heun" if key == "solver_type" else "third-order"
    with pytest.raises(InputError, match=re.escape(
            f"dpm++ with {named} takes a step of zero length at {steps} steps (from timestep 0 to its own noise "
            f"level), which the {update} update divides by (diffusers returns NaN); use {fix}") + "$"):
        timesteps_and_sigmas(SamplerConfig.from_scheduler_config(d), steps)


def test_deis_with_zero_final_sigma_is_refused_as_diffusers_does():
    d = {**PIXART, "algorithm_type": "deis", "final_sigmas_type": "zero"}
    with pytest.raises(ValueError, match="final_sigmas_type"):
        reference_scheduler(d)
    with pytest.raises(ConfigError, match=r"final_sigmas_type='zero' is not supported for algorithm_type='deis'"):
        SamplerConfig.from_scheduler_config(d)


# Settings of diffusers' schedulers beyond PixArt's published config: (class, overrides, steps, timesteps exact).
# Euler's Karras and exponential timesteps are fractional and move in the 7th digit with the training sigmas,
# which torch's float32 square root (not always correctly rounded) computes an ulp away from numpy's.
DPM, DDIM, EULER = "DPMSolverMultistepScheduler", "DDIMScheduler", "EulerDiscreteScheduler"
COSINE = {"beta_schedule": "squaredcos_cap_v2"}
ZERO_SNR = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
EXTENDED_CASES = [
    (DPM, COSINE, 20, True),
    (DPM, {**COSINE, "lambda_min_clipped": -5.1}, 7, True),
    (DPM, {**COSINE, "use_karras_sigmas": True}, 10, True),  # Karras timesteps truncated, not rounded
    (DDIM, COSINE, 10, True),
    (EULER, COSINE, 10, True),
    (DPM, ZERO_SNR, 3, True),
    (DPM, ZERO_SNR, 20, True),
    (DPM, {**ZERO_SNR, "use_karras_sigmas": True}, 10, True),  # sigma_999 (4096) is below sigma_998
    (DPM, {**ZERO_SNR, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, 7, True),
    (DDIM, ZERO_SNR, 3, True),
    (DDIM, ZERO_SNR, 20, True),
    (DDIM, {**ZERO_SNR, "prediction_type": "sample", "clip_sample": False}, 7, True),
    (EULER, ZERO_SNR, 7, True),  # at fewer steps torch's sigma_999 (4096 for 4095.9998) shows
    (EULER, ZERO_SNR, 20, True),
    (DPM, {"use_exponential_sigmas": True}, 3, True),
    (DPM, {"use_exponential_sigmas": True}, 20, True),
    (DPM, {"use_exponential_sigmas": True, "sigma_min": 0.1, "sigma_max": 20.0}, 10, True),
    (EULER, {"use_exponential_sigmas": True}, 3, False),
    (EULER, {"use_exponential_sigmas": True}, 20, False),
    (EULER, {"use_exponential_sigmas": True, "sigma_min": 0.1, "sigma_max": 20.0}, 10, False),
    (DPM, {"use_lu_lambdas": True}, 3, True),
    (DPM, {"use_lu_lambdas": True}, 20, True),
    (DPM, {"use_lu_lambdas": True, "solver_order": 3, "final_sigmas_type": "sigma_min"}, 10, True),
    (DPM, {"use_lu_lambdas": True, "use_exponential_sigmas": True}, 10, True),  # diffusers takes Lu's
    (EULER, {"interpolation_type": "log_linear"}, 1, True),
    (EULER, {"interpolation_type": "log_linear"}, 3, True),
    (EULER, {"interpolation_type": "log_linear"}, 20, True),
    (EULER, {"interpolation_type": "log_linear", "timestep_spacing": "leading", "steps_offset": 1}, 10, True),
    (EULER, {"interpolation_type": "log_linear", "use_karras_sigmas": True}, 10, False),
    (EULER, {"timestep_type": "continuous"}, 10, True),  # as "discrete" unless prediction_type is v_prediction
    (EULER, {"timestep_type": "continuous", "prediction_type": "sample"}, 10, True),
    (EULER, {"num_train_timesteps": 20}, 21, True),  # more steps than training timesteps
    (EULER, {"num_train_timesteps": 20, "timestep_spacing": "trailing"}, 30, True),  # timesteps repeat
]


@pytest.mark.parametrize("class_name,overrides,steps,exact", EXTENDED_CASES,
                         ids=[f"{c[:5]}-{o}-{s}" for c, o, s, _ in EXTENDED_CASES])
def test_further_diffusers_settings_match_diffusers(class_name, overrides, steps, exact):
    d = {**PIXART, "_class_name": class_name, **overrides}
    check_parity(d, SamplerConfig.from_scheduler_config(d), steps, timesteps_exact=exact, tol=1e-5)


def test_zero_terminal_snr_noise_levels_are_diffusers_to_float32_rounding():
    """Bit for bit but for torch's float32 square root, which the rescaling takes twice (before squaring again)."""
    for class_name in (DPM, DDIM):
        d = {**PIXART, "_class_name": class_name, **ZERO_SNR}
        ref = reference_scheduler(d).alphas_cumprod.numpy()
        ours = _alphas_cumprod(SamplerConfig.from_scheduler_config(d))
        assert ours[-1] == ref[-1] == (0.0 if class_name == DDIM else 2.0**-24)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_ddim_refuses_an_epsilon_model_at_zero_terminal_snr(spacing):
    """alpha_bar_999 is 0: x0 = (x - eps) / 0, which diffusers clips to +-clip_sample_range or, unclipped, is NaN."""
    d = {**PIXART, "_class_name": DDIM, "rescale_betas_zero_snr": True, "timestep_spacing": spacing,
         "clip_sample": False}
    assert np.isnan(reference_loop(reference_scheduler(d), 10, noise())[1]).any()
    with pytest.raises(InputError, match="^ddim with rescale_betas_zero_snr and prediction_type 'epsilon' starts at "
                                         "timestep 999, where alpha_bar is 0"):
        timesteps_and_sigmas(SamplerConfig.from_scheduler_config(d), 10)
    leading = SamplerConfig.from_scheduler_config({**d, "timestep_spacing": "leading"})  # never visits 999
    assert timesteps_and_sigmas(leading, 10).timesteps[0] == 900


def test_euler_continuous_timesteps_with_v_prediction_are_refused():
    """diffusers then calls the model at 0.25 log sigma instead of a training timestep."""
    d = {**PIXART, "_class_name": EULER, "timestep_type": "continuous", "prediction_type": "v_prediction"}
    ref = reference_scheduler(d)
    ref.set_timesteps(4)
    np.testing.assert_allclose(ref.timesteps.numpy(), 0.25 * np.log(ref.sigmas[:-1].numpy()), rtol=1e-6)
    with pytest.raises(ConfigError, match=re.escape("scheduler config: timestep_type='continuous' is not supported "
                                                    "with prediction_type='v_prediction'")):
        SamplerConfig.from_scheduler_config(d)
    with pytest.raises(ConfigError, match=re.escape("timestep_type='edm' is not supported; expected one of "
                                                    "'discrete', 'continuous'")):
        SamplerConfig.from_scheduler_config({**d, "timestep_type": "edm"})


def test_karras_and_exponential_sigmas_together_are_refused_as_diffusers_does():
    d = {**PIXART, "use_karras_sigmas": True, "use_exponential_sigmas": True}
    with pytest.raises(ValueError, match="Only one of"):
        reference_scheduler(d)
    with pytest.raises(ConfigError, match="^scheduler config: use_karras_sigmas and use_exponential_sigmas are both "
                                          "true; set at most one"):
        SamplerConfig.from_scheduler_config(d)


@pytest.mark.parametrize("class_name,overrides", [
    (DPM, {"use_karras_sigmas": True, "sigma_min": 0, "final_sigmas_type": "sigma_min"}),  # failed after the loop
    (DPM, {"use_karras_sigmas": True, "sigma_min": -1.0}),
    (EULER, {"use_karras_sigmas": True, "sigma_min": -1.0}),
    (EULER, {"use_karras_sigmas": True, "sigma_max": 0.0}),
    (EULER, {"use_exponential_sigmas": True, "sigma_min": 0}),
    (DPM, {"use_karras_sigmas": True, "sigma_max": math.inf}),
    (EULER, {"use_karras_sigmas": True, "sigma_min": math.nan}),
])
def test_a_karras_or_exponential_range_must_be_positive_and_finite(class_name, overrides):
    d = {**PIXART, "_class_name": class_name, **overrides}
    key = "sigma_min" if "sigma_min" in overrides else "sigma_max"
    ranged = "use_karras_sigmas" if "use_karras_sigmas" in overrides else "use_exponential_sigmas"
    with pytest.raises(ConfigError) as info:
        SamplerConfig.from_scheduler_config(d)
    assert str(info.value) == (f"scheduler config: {key}={overrides[key]!r} must be a finite number > 0 with "
                               f"{ranged}, or null for the training schedule's own")
    # a range no schedule reads is no error, as in diffusers
    plain = SamplerConfig.from_scheduler_config({**d, ranged: False})
    np.testing.assert_equal(getattr(plain, key), overrides[key])


def test_euler_takes_more_steps_than_training_timesteps_and_the_others_do_not():
    d = {**PIXART, "num_train_timesteps": 100}
    config = SamplerConfig.from_scheduler_config(d)
    assert len(timesteps_and_sigmas(config.with_sampler("euler"), 250).timesteps) == 250
    for name in ("dpm++", "ddim"):
        with pytest.raises(InputError, match=r"^num_steps=101 must be an integer in 1\.\.100$"):
            timesteps_and_sigmas(config.with_sampler(name), 101)
    with pytest.raises(InputError, match="^num_steps=0 must be an integer >= 1$"):
        timesteps_and_sigmas(config.with_sampler("euler"), 0)
    # "leading" spacing puts every timestep at 0 past 100 steps: diffusers skips a step and fails at the end
    leading = SamplerConfig.from_scheduler_config({**d, "timestep_spacing": "leading"}).with_sampler("euler")
    with pytest.raises(InputError, match="^euler starts at timestep 0 twice at 101 steps; use fewer steps$"):
        timesteps_and_sigmas(leading, 101)


def test_a_step_count_refused_gives_its_reason_apart():
    """StepsError's `reason` is the message without the API's name for the argument, for the CLI's '--steps N: '
    (which cut 'num_steps=N ' off the text); a reason that names no argument is the whole message."""
    d = {**PIXART, "num_train_timesteps": 100}
    with pytest.raises(StepsError) as info:
        timesteps_and_sigmas(SamplerConfig.from_scheduler_config(d), 101)
    assert (str(info.value), info.value.reason) == ("num_steps=101 must be an integer in 1..100",
                                                    "must be an integer in 1..100")
    leading = SamplerConfig.from_scheduler_config({**d, "timestep_spacing": "leading"}).with_sampler("euler")
    with pytest.raises(StepsError) as info:
        timesteps_and_sigmas(leading, 101)
    assert str(info.value) == info.value.reason == "euler starts at timestep 0 twice at 101 steps; use fewer steps"


def test_a_scheduler_config_error_names_the_file_it_is_read_from():
    """`where` names the config in every error, those of the dataclass's own checks too (callers cut the
    'scheduler config: ' these began with off to put the path in)."""
    with pytest.raises(ConfigError) as info:
        SamplerConfig.from_scheduler_config({**PIXART, "beta_start": 0.5}, "m/scheduler/scheduler_config.json")
    assert str(info.value) == ("m/scheduler/scheduler_config.json: beta_start=0.5 and beta_end=0.02 must satisfy "
                               "0 < beta_start <= beta_end < 1")
    with pytest.raises(ConfigError) as info:
        SamplerConfig.from_scheduler_config({**PIXART, "where": "x"}, "m/s.json")  # no config key
    assert str(info.value) == ("m/s.json: unknown key 'where' for DPMSolverMultistepScheduler: studio doesn't know it "
                               "(a newer diffusers may have written it); if it holds its default value, remove it "
                               "from the file")


def test_a_misspelt_scheduler_key_is_refused_with_the_key_it_is_near():
    with pytest.raises(ConfigError) as info:
        SamplerConfig.from_scheduler_config({**PIXART, "use_karas_sigmas": True}, "m/s.json")
    assert str(info.value) == ("m/s.json: unknown key 'use_karas_sigmas' for DPMSolverMultistepScheduler (did you "
                               "mean 'use_karras_sigmas'?)")
    # a key diffusers filled with its default (a newer diffusers' setting, at its default) changes nothing
    newer = SamplerConfig.from_scheduler_config({**PIXART, "future_flag": 1, "_use_default_values": ["future_flag"]})
    assert newer == SamplerConfig.from_scheduler_config(PIXART)


def _pipeline_folder(tmp_path, scheduler_config: dict, model_index_class: str | None):
    """The two files `read_scheduler` reads, as a pipeline folder holds them; the config's path."""
    (tmp_path / "scheduler").mkdir(parents=True)
    index = {"_class_name": "PixArtSigmaPipeline"}
    if model_index_class:
        index["scheduler"] = ["diffusers", model_index_class]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    path = tmp_path / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(scheduler_config))
    return path


@pytest.mark.parametrize("config,model_index_class", [
    ({**PIXART, "use_karas_sigmas": True}, DPM),  # not a setting studio can't run: sampler= would drop it
    ({**PIXART, "use_karas_sigmas": True}, None),
    ({**PIXART, "use_karas_sigmas": True}, DDIM),  # read as DDIM: dropped as another class's key
    ({**PIXART, "use_karas_sigmas": True}, "UniPCMultistepScheduler"),
    ({k: v for k, v in PIXART.items() if k != "_class_name"} | {"use_karas_sigmas": True}, DPM),  # model_index's class
])
def test_a_misspelt_key_in_a_scheduler_file_studio_implements_fails_the_load(tmp_path, config, model_index_class):
    from studio.pipeline import read_scheduler

    path = _pipeline_folder(tmp_path, config, model_index_class)
    with pytest.raises(ConfigError) as info:
        read_scheduler(path)
    assert str(info.value) == (f"{path}: unknown key 'use_karas_sigmas' for DPMSolverMultistepScheduler (did you "
                               "mean 'use_karras_sigmas'?)")


def test_keys_of_a_scheduler_class_studio_doesnt_implement_are_dropped_as_diffusers_does(tmp_path):
    from studio.pipeline import UnrunnableScheduler, read_scheduler

    unipc = {**PIXART, "_class_name": "UniPCMultistepScheduler", "predict_x0": True, "solver_p": None,
             "clip_sampel": False}
    assert read_scheduler(_pipeline_folder(tmp_path / "a", unipc, DDIM)) == \
        SamplerConfig.from_scheduler_config(PIXART).with_sampler("ddim")
    path = _pipeline_folder(tmp_path / "b", unipc, "UniPCMultistepScheduler")
    unrunnable = read_scheduler(path)
    assert isinstance(unrunnable, UnrunnableScheduler) and unrunnable.runnable == ["dpm++", "ddim", "euler"]
    assert unrunnable.problem.endswith("; pass sampler='dpm++', 'ddim' or 'euler' (CLI: --sampler) to sample with one "
                                       "of studio's samplers instead")
    assert unrunnable.with_sampler("dpm++") == SamplerConfig.from_scheduler_config(PIXART)


def test_another_diffusers_class_keys_in_a_file_of_studios_class_are_dropped_as_diffusers_does(tmp_path):
    """A DPM file saved from a Stable Diffusion pipeline's PNDM config carries skip_prk_steps: diffusers' DPM
    ignores it, and so does studio's; a key no diffusers scheduler takes is still refused."""
    from studio.pipeline import read_scheduler

    config = {**PIXART, "skip_prk_steps": True, "predict_x0": True}
    ours = read_scheduler(_pipeline_folder(tmp_path / "a", config, DPM))
    assert ours == SamplerConfig.from_scheduler_config(PIXART)
    check_parity(config, ours, 7)
    path = _pipeline_folder(tmp_path / "b", {**config, "lower_order_finale": True}, DPM)
    with pytest.raises(ConfigError, match=r"unknown key 'lower_order_finale' for DPMSolverMultistepScheduler \(did "
                                          r"you mean 'lower_order_final'\?\)$"):
        read_scheduler(path)


def test_a_wrong_value_is_not_followed_by_the_sampler_hint(tmp_path):
    """Another sampler is the way round a class or setting studio doesn't implement, not round a wrong value,
    even one that sampler would not read."""
    from studio.pipeline import UnrunnableScheduler, read_scheduler

    path = _pipeline_folder(tmp_path, {**PIXART, "lambda_min_clipped": 5.0}, DPM)
    unrunnable = read_scheduler(path)
    assert isinstance(unrunnable, UnrunnableScheduler) and unrunnable.runnable == []
    assert unrunnable.problem == (f"{path}: lambda_min_clipped=5.0 is above every training timestep's log-SNR (the "
                                  "largest is 4.60504); remove it or lower it")
    assert unrunnable.with_sampler("ddim").sampler == "ddim"  # sampler= still runs it


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_a_lambda_min_clipped_above_every_timestep_is_refused(spacing):
    """diffusers then runs timesteps -1 and 0 over again ("linspace", "leading") or none ("trailing")."""
    d = {**PIXART, "lambda_min_clipped": 5.0, "timestep_spacing": spacing}
    ref = reference_scheduler(d)
    ref.set_timesteps(4)
    assert (ref.timesteps < 1).all()
    largest = float(ref.lambda_t[0])
    assert largest == pytest.approx(4.60504, abs=1e-5)
    with pytest.raises(ConfigError) as info:
        SamplerConfig.from_scheduler_config(d)
    assert str(info.value) == ("scheduler config: lambda_min_clipped=5.0 is above every training timestep's "
                               "log-SNR (the largest is 4.60504); remove it or lower it")
    with pytest.raises(ConfigError, match=r"^scheduler config: lambda_min_clipped=nan is not a number; remove it"):
        SamplerConfig.from_scheduler_config({**d, "lambda_min_clipped": math.nan})
    # Karras sigmas replace the clipped timesteps, as in diffusers; just below the largest, one step at timestep 0
    karras = {**d, "use_karras_sigmas": True}
    check_parity(karras, SamplerConfig.from_scheduler_config(karras), 4)
    below = {**d, "lambda_min_clipped": 4.6}
    assert timesteps_and_sigmas(SamplerConfig.from_scheduler_config(below), 1).timesteps.tolist() == [0]
    check_parity(below, SamplerConfig.from_scheduler_config(below), 1)


def test_a_lambda_min_clipped_beside_a_beta_start_that_rounds_alpha_bar_to_1_is_no_traceback():
    """Timestep 0's sigma is then 0 and its log-SNR infinite: every lambda_min_clipped is below it."""
    config = SamplerConfig.from_scheduler_config({**PIXART, "beta_start": 1e-9, "lambda_min_clipped": -5.0})
    assert config.lambda_min_clipped == -5.0 and _train_sigmas(_alphas_cumprod(config))[0] == 0
