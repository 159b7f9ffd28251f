"""Samplers: a noise predictor and initial noise in, a denoised latent out.

`SamplerConfig` holds the settings of a diffusers `scheduler_config.json` that change the result.
`timesteps_and_sigmas` computes the schedule (numpy float64, no tensors); `dpmpp`, `ddim` and
`euler` are the solver loops (MindSpore tensors, state in locals); `sample` picks one by name.
Each reproduces what the diffusers scheduler of the same name computes in the loop
`x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample`.

Noise levels are given as `sigmas`, sigma = sqrt((1 - alpha_bar) / alpha_bar), the variance-exploding
scale; the variance-preserving sample is x_t = alpha x0 + sigma_vp eps with alpha = 1 / sqrt(1 + sigma^2)
and sigma_vp = sigma alpha. DPM-Solver++ and DDIM carry the variance-preserving sample, Euler the
variance-exploding one (x_t / alpha), which is why only Euler scales its initial noise and its model input.
"""

import dataclasses
import difflib
import math
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import mindspore as ms
import numpy as np
from mindspore import ops

from studio.errors import ConfigError, InputError

ModelFn = Callable[[ms.Tensor, float], ms.Tensor]
"""model_fn(x_in (B, C, H, W), t) -> model output (B, C, H, W): eps, v or x0 per `prediction_type`."""

Callback = Callable[[int, int], None]
"""callback(step_index, num_steps), called after each step; step_index counts from 0."""

SAMPLERS = {
    "dpm++": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
}

# The `__init__` arguments of each diffusers scheduler with their defaults (diffusers 0.42). A key
# missing from a config takes its class's default, as in diffusers' `from_config`.
_COMMON = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}
_CLASS_KEYS = {
    "dpm++": {
        **_COMMON,
        "solver_order": 2,
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "use_lu_lambdas": False,
        "use_flow_sigmas": False,
        "flow_shift": 1.0,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": -math.inf,
        "variance_type": None,
        "timestep_spacing": "linspace",
        "use_dynamic_shifting": False,
        "time_shift_type": "exponential",
    },
    "ddim": {
        **_COMMON,
        "clip_sample": True,
        "set_alpha_to_one": True,
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "clip_sample_range": 1.0,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
    },
    "euler": {
        **_COMMON,
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "sigma_min": None,
        "sigma_max": None,
        "timestep_spacing": "linspace",
        "timestep_type": "discrete",
        "final_sigmas_type": "zero",
    },
}
KNOWN_KEYS = set().union(*_CLASS_KEYS.values())
# the keys of diffusers' other scheduler classes (0.42's PNDM, UniPC, LCM, EDM, flow matching, ...), which a file
# of one of studio's classes may carry (diffusers' from_config keeps them) and which its samplers don't read, as
# diffusers doesn't; any other key is a typo or a setting of a newer diffusers (`check_keys`)
OTHER_CLASS_KEYS = frozenset({
    "alpha_cum_end", "alpha_cum_start", "base_image_seq_len", "base_shift", "block_length", "clip_denoised",
    "correct_steps", "corrector_k", "corrector_order", "corrector_selection", "corrector_selection_tau",
    "corrector_steps", "disable_corrector", "editing_threshold", "entropy_bound", "eps", "eta",
    "final_step_size_scale", "gamma", "gamma_cum_end", "gamma_cum_start", "invert_sigmas", "mask_token_id",
    "masking_schedule", "max_image_seq_len", "max_shift", "minimal_topk", "n_grid", "noise_mode",
    "num_policy_substeps", "num_vec_classes", "original_inference_steps", "predict_x0", "predictor_order", "rho", "s",
    "s_churn", "s_max", "s_min", "s_noise", "sampling_eps", "scale_factors", "schedule_mode", "scheduler_type",
    "shift", "shift_terminal", "sigma_data", "sigma_schedule", "skip_prk_steps", "snr", "snr_shift_scale", "solver_p",
    "stage_range", "stages", "stochastic_sampling", "t_lim_ode", "t_lim_ode_below", "t_max", "t_min",
    "tail_step_multiplier", "tail_steps", "tau_func", "threshold", "timestep_scaling", "tsr_k", "tsr_sigma",
    "upscale_mode",
})

# Keys we accept only at one value (the alternatives are not implemented). Keys neither here nor a
# SamplerConfig field (dynamic_thresholding_ratio, sample_max_value, flow_shift, time_shift_type)
# only matter when one of these is switched on, except Euler's timestep_type, which matters only with
# v_prediction (from_scheduler_config checks it).
_FIXED = {
    "trained_betas": None,
    "thresholding": False,
    "algorithm_type": "dpmsolver++",
    "use_beta_sigmas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
    "variance_type": None,  # a learned-variance model's extra channels are split off before sampling
}

_CHOICES = {
    "sampler": tuple(SAMPLERS),
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "interpolation_type": ("linear", "log_linear"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("linspace", "leading", "trailing"),
    "solver_order": (1, 2, 3),
    "solver_type": ("midpoint", "heun"),
    "final_sigmas_type": ("zero", "sigma_min"),
}


class Unimplemented(ConfigError):
    """A scheduler class or setting studio doesn't implement, as opposed to a wrong value: another of studio's
    samplers may run the file (`pipeline.UnrunnableScheduler` says which)."""


def check_keys(d: dict, class_name: str, where="scheduler config") -> None:
    """A ConfigError for a key of the scheduler_config.json dict `d`, of studio's scheduler class `class_name`,
    that no scheduler class of diffusers' takes (a file carries other classes' keys, as diffusers' `from_config`
    keeps them: `OTHER_CLASS_KEYS`): a typo, or a newer diffusers' setting. Private ('_...') keys and those
    diffusers filled with defaults (`_use_default_values`) are not checked."""
    defaulted = set(d.get("_use_default_values", ()))
    for key in d:
        if key.startswith("_") or key in defaulted or key in KNOWN_KEYS or key in OTHER_CLASS_KEYS:
            continue
        near = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
        why = (f" (did you mean {near[0]!r}?)" if near else
               ": studio doesn't know it (a newer diffusers may have written it); if it holds its default value, "
               "remove it from the file")
        raise ConfigError(f"{where}: unknown key {key!r} for {class_name}{why}")


@dataclass(frozen=True)
class SamplerConfig:
    """The settings of a scheduler_config.json that change the result; field names are its keys.

    Build it with `from_scheduler_config`. The field defaults equal PixArt-Sigma's published
    DPMSolverMultistepScheduler config; `given` holds the keys the source config set explicitly
    (any class's keys), which `with_sampler` carries over.
    """

    sampler: str = "dpm++"  # "dpm++" | "ddim" | "euler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    rescale_betas_zero_snr: bool = False
    prediction_type: str = "epsilon"
    timestep_spacing: str = "linspace"
    steps_offset: int = 0
    # dpm++
    solver_order: int = 2
    solver_type: str = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    lambda_min_clipped: float = -math.inf
    use_lu_lambdas: bool = False
    # dpm++ and euler
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    final_sigmas_type: str = "zero"
    sigma_min: float | None = None  # Karras or exponential range; None: the schedule's own
    sigma_max: float | None = None
    # euler
    interpolation_type: str = "linear"
    # ddim
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True

    given: tuple[tuple[str, Any], ...] = ()
    where: InitVar[str | Path] = "scheduler config"  # what its errors name: the file `from_scheduler_config` reads

    def __post_init__(self, where: str | Path):
        for key, allowed in _CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                expected = ", ".join(repr(a) for a in allowed)
                raise Unimplemented(f"{where}: {key}={value!r} is not supported; expected one of {expected}")
        if self.num_train_timesteps < 1:
            raise ConfigError(f"{where}: num_train_timesteps={self.num_train_timesteps!r} must be >= 1")
        # equal: constant betas, which diffusers runs too; the cosine schedule does not read them
        if self.beta_schedule != "squaredcos_cap_v2" and not 0 < self.beta_start <= self.beta_end < 1:
            raise ConfigError(f"{where}: beta_start={self.beta_start!r} and beta_end={self.beta_end!r} "
                              "must satisfy 0 < beta_start <= beta_end < 1")
        if self.use_karras_sigmas and self.use_exponential_sigmas:
            raise ConfigError(f"{where}: use_karras_sigmas and use_exponential_sigmas are both true; "
                              "set at most one (diffusers refuses both too)")
        for ranged in [k for k in ("use_karras_sigmas", "use_exponential_sigmas") if getattr(self, k)]:
            for key in ("sigma_min", "sigma_max"):  # read only by these two schedules
                value = getattr(self, key)
                if value is not None and not (math.isfinite(value) and value > 0):
                    raise ConfigError(f"{where}: {key}={value!r} must be a finite number > 0 with "
                                      f"{ranged}, or null for the training schedule's own")
        spaced = not (self.use_karras_sigmas or self.use_lu_lambdas or self.use_exponential_sigmas)
        if self.sampler == "dpm++" and spaced and self.lambda_min_clipped != -math.inf:
            # the spaced timesteps stop where log-SNR falls below it: above timestep 0's, there are none
            first = _train_sigmas(_alphas_cumprod(self))[0]  # 0 when alpha_bar rounds to 1 (a tiny beta_start)
            largest = -math.log(first) if first > 0 else math.inf
            if math.isnan(self.lambda_min_clipped):  # which diffusers sorts above every log-SNR
                raise ConfigError(f"{where}: lambda_min_clipped=nan is not a number; remove it or give a log-SNR")
            if self.lambda_min_clipped > largest:
                raise ConfigError(f"{where}: lambda_min_clipped={self.lambda_min_clipped!r} is above every training "
                                  f"timestep's log-SNR (the largest is {largest:.6g}); remove it or lower it")

    @classmethod
    def from_scheduler_config(cls, d: dict, where="scheduler config") -> "SamplerConfig":
        """From a diffusers scheduler_config.json dict (a scheduler's `save_config` file, or
        `json.loads(scheduler.to_json_string())`; its `.config` lacks `_class_name`), as diffusers reads it;
        `where` (its path) names it in errors."""
        by_class = {v: k for k, v in SAMPLERS.items()}
        class_name = d.get("_class_name")
        if class_name not in by_class:
            expected = ", ".join(by_class)
            raise Unimplemented(f"{where}: _class_name={class_name!r} is not supported; expected one of {expected}")
        sampler = by_class[class_name]
        check_keys(d, class_name, where)
        # Keys diffusers filled with defaults are listed in `_use_default_values`; they do not carry over.
        defaulted = set(d.get("_use_default_values", ()))
        given = {k: v for k, v in d.items() if not k.startswith("_") and k not in defaulted | OTHER_CLASS_KEYS}

        settings = {**_CLASS_KEYS[sampler], **{k: v for k, v in given.items() if k in _CLASS_KEYS[sampler]}}
        if sampler == "dpm++" and settings["algorithm_type"] == "deis":  # a DEIS config: diffusers' DPM runs it
            if settings["final_sigmas_type"] == "zero":  # as dpmsolver++, after refusing this combination
                raise ConfigError(f"{where}: final_sigmas_type='zero' is not supported for "
                                  "algorithm_type='deis' (diffusers refuses it too); choose 'sigma_min'")
            settings["algorithm_type"] = "dpmsolver++"
        if settings.get("timestep_type", "discrete") not in ("discrete", "continuous"):  # only Euler's config has it
            raise Unimplemented(f"{where}: timestep_type={settings['timestep_type']!r} is not supported; "
                                "expected one of 'discrete', 'continuous'")
        if settings.get("timestep_type") == "continuous" and settings["prediction_type"] == "v_prediction":
            # otherwise "continuous" changes nothing; with v_prediction diffusers calls the model at 0.25 log sigma
            raise Unimplemented(f"{where}: timestep_type='continuous' is not supported with "
                                "prediction_type='v_prediction' (the model's time input would be EDM's 0.25 log "
                                "sigma); only timestep_type='discrete'")
        for key, value in settings.items():
            if key in _FIXED and value != _FIXED[key]:
                raise Unimplemented(f"{where}: {key}={value!r} is not supported; only {_FIXED[key]!r}")
        if sampler == "dpm++" and settings["solver_type"] in ("logrho", "bh1", "bh2"):
            settings["solver_type"] = "midpoint"  # UniPC's and DEIS's solver types, which diffusers' DPM runs so
        fields = {f.name for f in dataclasses.fields(cls)} - {"sampler", "given"}
        kwargs = {k: v for k, v in settings.items() if k in fields}
        # diffusers' DPM solver reads a Karras range from its config when a key set for Euler carried it there
        kwargs.update({k: given[k] for k in ("sigma_min", "sigma_max") if k in given})
        return cls(sampler=sampler, given=tuple(sorted(given.items())), where=where, **kwargs)

    def with_sampler(self, name: str) -> "SamplerConfig":
        """The same config run by another sampler, as diffusers' `NewScheduler.from_config(old.config)`:
        keys the source config set carry over, the others take the new class's defaults (DDIM's
        default timestep_spacing is "leading", but PixArt's config sets "linspace", which carries)."""
        if name not in SAMPLERS:
            raise InputError(f"sampler {name!r} is not supported; expected one of {', '.join(SAMPLERS)}")
        # A config built directly (not from a dict) has no `given`: its non-default fields count as set.
        defaults = _CLASS_KEYS[self.sampler]
        changed = {k: v for k, v in dataclasses.asdict(self).items() if k in defaults and v != defaults[k]}
        return SamplerConfig.from_scheduler_config({"_class_name": SAMPLERS[name], **changed, **dict(self.given)})


class Schedule(NamedTuple):
    """What a solver loop walks through; step i takes the sample from sigmas[i] to sigmas_next[i]."""

    timesteps: np.ndarray  # (n,) the model's time input: int64 (dpm++, ddim) or float32 (euler)
    sigmas: np.ndarray  # (n,) float64, noise level at which the model is called in step i
    sigmas_next: np.ndarray  # (n,) float64, noise level after step i; equals sigmas[i + 1] except in DDIM


# ---------------------------------------------------------------------------------------------
# Schedule: pure numpy


def _linspace_f32(start: float, end: float, n: int) -> np.ndarray:
    """torch.linspace(start, end, n, dtype=float32) to the bit, as its CPU kernel computes it: a float32 step,
    start + step * i for the first half and end - step * (n - 1 - i) for the second, each rounded once
    (a fused multiply-add, which float64 arithmetic reproduces); [start] for n = 1."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(max(n - 1, 1)))
    i = np.arange(n, dtype=np.float64)
    ramp = np.where(i < max(n // 2, 1), np.float64(start32) + step * i, np.float64(end32) - step * (n - 1 - i))
    return ramp.astype(np.float32)


def _cumprod_f32(x: np.ndarray) -> np.ndarray:
    """torch.cumprod of a float32 tensor: accumulated in float64, rounded once to float32."""
    return np.cumprod(x.astype(np.float64)).astype(np.float32)


def _cosine_betas(T: int) -> np.ndarray:
    """The cosine schedule (Nichol & Dhariwal 2021, eq. 17), beta_t = 1 - alpha_bar(t+1) / alpha_bar(t) capped at
    0.999, in Python floats rounded to float32, as diffusers' `betas_for_alpha_bar`."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)], dtype=np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas whose alpha_bar reaches 0 at the last timestep (Lin et al. 2023, arXiv:2305.08891, Alg. 1): sqrt(alpha_bar)
    shifted to end at 0 and scaled to keep its start, in float32 as diffusers' `rescale_zero_terminal_snr`."""
    root = np.sqrt(_cumprod_f32(np.float32(1) - betas))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alphas_cumprod = root**2
    return np.float32(1) - np.concatenate([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])


def _alphas_cumprod(config: SamplerConfig) -> np.ndarray:
    """alpha_bar_t for t = 0 .. T-1, as diffusers computes them in float32; float64 values of those float32 numbers.
    The model was trained on these, and the smallest training sigma (so a Karras schedule's every sigma) moves by
    1e-4 relative if they are computed in float64. With rescale_betas_zero_snr the last is 0 for DDIM; the
    other two samplers take 2^-24 there, as diffusers does, to keep the largest sigma finite (4096)."""
    T = config.num_train_timesteps
    if config.beta_schedule == "linear":
        betas = _linspace_f32(config.beta_start, config.beta_end, T)
    elif config.beta_schedule == "scaled_linear":
        betas = _linspace_f32(config.beta_start**0.5, config.beta_end**0.5, T) ** 2
    else:  # "squaredcos_cap_v2"
        betas = _cosine_betas(T)
    if config.rescale_betas_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    alphas_cumprod = _cumprod_f32(np.float32(1) - betas).astype(np.float64)
    if config.rescale_betas_zero_snr and config.sampler != "ddim":
        alphas_cumprod[-1] = 2.0**-24
    return alphas_cumprod


def _train_sigmas(alphas_cumprod: np.ndarray) -> np.ndarray:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), in float32 as diffusers computes it; float64 values."""
    a = alphas_cumprod.astype(np.float32)
    return np.sqrt((np.float32(1) - a) / a).astype(np.float64)


def _karras(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    """n sigmas from sigma_max down to sigma_min, uniform in sigma^(1/7) (Karras et al. 2022, eq. 5)."""
    rho = 7.0
    ramp = np.linspace(0.0, 1.0, n)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def _log_sigmas32(train_sigmas: np.ndarray) -> np.ndarray:
    """log sigma_t of the training noise levels, in float32 as diffusers computes them."""
    return np.log(train_sigmas.astype(np.float32))


def _converted_sigmas(config: SamplerConfig, train_sigmas: np.ndarray, low: float, high: float,
                      n: int) -> np.ndarray | None:
    """The n sigmas from high down to low that replace the spaced ones, or None: Karras, else (dpm++) Lu et al.'s
    (uniform in log-SNR over the whole training range, arXiv:2206.00927), else exponential (uniform in log sigma),
    in diffusers' order of precedence; a config's sigma_min and sigma_max replace low and high, except for Lu's."""
    sigma_min = config.sigma_min if config.sigma_min is not None else low
    sigma_max = config.sigma_max if config.sigma_max is not None else high
    if config.use_karras_sigmas:
        return _karras(sigma_min, sigma_max, n)
    if config.use_lu_lambdas and config.sampler == "dpm++":
        log_sigmas = _log_sigmas32(train_sigmas)
        top, bottom = float(log_sigmas[-1]), float(log_sigmas[0])
        return np.exp(top + np.linspace(0.0, 1.0, n) * (bottom - top))
    if config.use_exponential_sigmas:
        return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))
    return None


def _sigma_to_t(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each sigma: linear interpolation in log sigma, clamped, as diffusers'
    `_sigma_to_t` computes it with NumPy 1 (whose value-based casting keeps it in float32). It interpolates from
    the last training sigma not above it, which need not be the nearest: rescale_betas_zero_snr's sigma_999 (4096)
    is below sigma_998."""
    T = len(train_sigmas)
    if T == 1:
        return np.zeros(len(sigmas))
    log_sigmas = _log_sigmas32(train_sigmas)
    log_sigma = np.log(np.maximum(sigmas, 1e-10)).astype(np.float32)
    below = log_sigmas[:, None] <= log_sigma  # (T, n)
    low = np.where(below.any(axis=0), T - 1 - np.argmax(below[::-1], axis=0), 0).clip(max=T - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def _final_sigma(config: SamplerConfig, train_sigmas: np.ndarray) -> float:
    return 0.0 if config.final_sigmas_type == "zero" else float(train_sigmas[0])


def _within_training(config: SamplerConfig, timesteps: np.ndarray) -> np.ndarray:
    """`timesteps` (int64), or an InputError when one is past the last training timestep ('leading' spacing
    with a steps_offset, at many steps), where diffusers indexes out of range or returns NaN."""
    if len(timesteps) and timesteps.max() >= config.num_train_timesteps:
        raise InputError(f"{config.sampler} with timestep_spacing '{config.timestep_spacing}' and steps_offset "
                         f"{config.steps_offset} reaches timestep {int(timesteps.max())} at {len(timesteps)} steps, "
                         f"past the last training timestep {config.num_train_timesteps - 1}; use fewer steps")
    return timesteps


def _dpm_schedule(config: SamplerConfig, n: int, alphas_cumprod: np.ndarray) -> Schedule:
    T = config.num_train_timesteps
    train_sigmas = _train_sigmas(alphas_cumprod)
    sigmas = _converted_sigmas(config, train_sigmas, train_sigmas[0], train_sigmas[-1], n)
    if sigmas is not None:  # the spaced timesteps are never computed: they follow from the sigmas
        timesteps = _sigma_to_t(sigmas, train_sigmas)
        if (config.use_karras_sigmas or config.use_lu_lambdas) and config.beta_schedule != "squaredcos_cap_v2":
            timesteps = timesteps.round()  # diffusers rounds these; the others it truncates
        timesteps = timesteps.astype(np.int64)
    else:
        # Timesteps whose log-SNR lambda falls below lambda_min_clipped are never visited.
        lambdas = -np.log(train_sigmas)
        last = T - int(np.searchsorted(lambdas[::-1], config.lambda_min_clipped))
        if config.timestep_spacing == "linspace":
            timesteps = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
        elif config.timestep_spacing == "leading":
            timesteps = (np.arange(n + 1) * (last // (n + 1)))[::-1][:-1] + config.steps_offset
        else:  # "trailing"
            timesteps = np.arange(last, 0, -T / n).round() - 1
        timesteps = _within_training(config, timesteps.astype(np.int64))
        # "trailing" spacing with a lambda_min_clipped can end at timestep -1, which takes sigma_0 here
        sigmas = np.interp(timesteps, np.arange(T), train_sigmas)
    sigmas = np.append(sigmas, _final_sigma(config, train_sigmas))
    return Schedule(timesteps, sigmas[:-1], sigmas[1:])


def _ddim_schedule(config: SamplerConfig, n: int, alphas_cumprod: np.ndarray) -> Schedule:
    T = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        timesteps = np.linspace(0, T - 1, n).round()[::-1]
    elif config.timestep_spacing == "leading":
        timesteps = (np.arange(n) * (T // n))[::-1] + config.steps_offset
    else:  # "trailing"
        timesteps = np.arange(T, 0, -T / n).round() - 1
    timesteps = _within_training(config, timesteps.astype(np.int64))
    # diffusers' DDIM steps from t to t - T // n whatever the spacing, so with "linspace" and
    # "trailing" a step need not land on the next timestep. Below t = 0: alpha_bar = 1 or alpha_bar_0.
    final = 1.0 if config.set_alpha_to_one else alphas_cumprod[0]
    prev = timesteps - T // n
    a = alphas_cumprod[timesteps]
    a_next = np.where(prev >= 0, alphas_cumprod[np.maximum(prev, 0)], final)
    with np.errstate(divide="ignore"):  # alpha_bar 0 (rescale_betas_zero_snr's last timestep): sigma is infinite
        return Schedule(timesteps, np.sqrt((1 - a) / a), np.sqrt((1 - a_next) / a_next))


def _euler_schedule(config: SamplerConfig, n: int, alphas_cumprod: np.ndarray) -> Schedule:
    T = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        timesteps = np.linspace(0, T - 1, n, dtype=np.float32)[::-1]
    elif config.timestep_spacing == "leading":
        timesteps = (np.arange(n) * (T // n))[::-1].astype(np.float32) + config.steps_offset
    else:  # "trailing"
        timesteps = np.arange(T, 0, -T / n).round().astype(np.float32) - 1
    train_sigmas = _train_sigmas(alphas_cumprod)
    if config.interpolation_type == "linear":
        sigmas = np.interp(timesteps.astype(np.float64), np.arange(T, dtype=np.float64), train_sigmas)
    else:  # "log_linear": n + 1 sigmas uniform in log sigma over the training range, in float32, whatever the timesteps
        top, bottom = np.log(np.float32(train_sigmas[-1])), np.log(np.float32(train_sigmas[0]))
        # torch's float32 exp is nearer the correctly rounded one than numpy's: float64, rounded once
        sigmas = np.exp(_linspace_f32(top, bottom, n + 1).astype(np.float64)).astype(np.float32).astype(np.float64)
    converted = _converted_sigmas(config, train_sigmas, sigmas[-1], sigmas[0], n)
    if converted is not None:
        sigmas = converted
        timesteps = _sigma_to_t(sigmas, train_sigmas).astype(np.float32)
    sigmas = np.append(sigmas, _final_sigma(config, train_sigmas))
    # n + 2 sigmas with "log_linear" alone: diffusers' last step ends at the smallest training sigma, not the final one
    return Schedule(np.ascontiguousarray(timesteps), sigmas[:n], sigmas[1:n + 1])


class StepsError(InputError):
    """A step count the schedule can't run: '<subject> <reason>', the subject the argument as the API names it
    ('num_steps=5'; none when the reason names the steps); `reason` alone is for a caller that names the
    argument in its own words (the CLI: '--steps 5: <reason>'). `limit`: the scheduler's training steps when the
    count is past them (a layout says so: its reader sees no scheduler_config.json), else None."""

    def __init__(self, reason: str, subject: str | None = None, limit: int | None = None):
        super().__init__(f"{subject} {reason}" if subject else reason)
        self.reason = reason
        self.limit = limit


def _same_float32(a: float, b: float) -> bool:
    """Whether two noise levels are one float32 value, or within 4 ulps of one: diffusers' equal float32 values
    can come out an ulp or two apart here (Lu et al.'s last sigma as exp of its float32 log), and a step that
    short is no step either."""
    a, b = np.float32(a), np.float32(b)
    return bool(abs(a - b) <= 4 * np.spacing(max(abs(a), abs(b))))


def timesteps_and_sigmas(config: SamplerConfig, num_steps: int) -> Schedule:
    """The schedule of `num_steps` steps, as the diffusers scheduler's `set_timesteps` computes it: for dpm++
    with "trailing" spacing and a lambda_min_clipped, fewer steps than asked. A StepsError for a step count the
    config can't run (timesteps past the last training step; for dpm++ a second-order step that divides by zero;
    for ddim an epsilon model at a zero terminal SNR), before any model is called."""
    T = config.num_train_timesteps
    if config.sampler == "euler":  # its timesteps may fall between training timesteps: any number of them, as diffusers
        if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
            raise StepsError("must be an integer >= 1", f"num_steps={num_steps!r}")
    elif not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= T:
        raise StepsError(f"must be an integer in 1..{T}", f"num_steps={num_steps!r}", limit=T)
    n = int(num_steps)
    make = {"dpm++": _dpm_schedule, "ddim": _ddim_schedule, "euler": _euler_schedule}[config.sampler]
    schedule = make(config, n, _alphas_cumprod(config))
    if config.prediction_type == "epsilon" and np.isinf(schedule.sigmas).any():  # ddim with rescale_betas_zero_snr
        raise StepsError(f"ddim with rescale_betas_zero_snr and prediction_type 'epsilon' starts at timestep {T - 1}, "
                         "where alpha_bar is 0 and the data prediction divides by it (diffusers clips the infinite "
                         "result to clip_sample_range or returns NaN); a zero terminal SNR needs prediction_type "
                         "'v_prediction'")
    if config.sampler != "ddim" and len(schedule.timesteps) > 1 and schedule.timesteps[0] == schedule.timesteps[1]:
        # diffusers finds where to start by the first timestep, taking the second of two equal ones: it skips a
        # step and fails at the end (an index past the schedule)
        largest = _train_sigmas(_alphas_cumprod(config))[-1]
        why = (f": sigma_max {config.sigma_max:g} is above the largest training noise level {largest:.6g}; lower it"
               if (config.use_karras_sigmas or config.use_exponential_sigmas) and config.sigma_max is not None
               and config.sigma_max > largest else
               "; use fewer steps")
        raise StepsError(f"{config.sampler} starts at timestep {int(schedule.timesteps[0])} twice at {n} steps{why}")
    if config.sampler == "dpm++":
        timesteps, sigmas, sigmas_next = schedule
        # a step of order k divides by the k - 1 steps before it in log-SNR; heun's second-order update and the
        # third-order one by their own length too (the float32 sigmas diffusers steps on); the midpoint rule's
        # step of zero length leaves the sample as it is
        for i, order in enumerate(_dpm_orders(config, len(timesteps))):
            if any(sigmas[j - 1] == sigmas[j] for j in range(i - order + 2, i + 1)):
                raise StepsError(f"dpm++ with timestep_spacing '{config.timestep_spacing}' visits timestep "
                                 f"{int(timesteps[i])} twice at {n} steps; use fewer steps")
            setting, fix = (("solver_order 3", "solver_order 2") if order == 3 else
                            ("solver_type 'heun'", "solver_type 'midpoint'") if order == 2 and config.solver_type == "heun"
                            else (None, None))
            if setting and _same_float32(sigmas[i], sigmas_next[i]):
                update = "third-order" if order == 3 else "heun"
                raise StepsError(f"dpm++ with {setting} takes a step of zero length at {n} steps (from timestep "
                                 f"{int(timesteps[i])} to its own noise level), which the {update} update divides by "
                                 f"(diffusers returns NaN); use {fix}")
    return schedule


def init_noise_sigma(config: SamplerConfig, num_steps: int) -> float:
    """Scale of the initial noise: 1 for the variance-preserving samplers; for Euler the largest sigma
    ("linspace", "trailing") or sqrt(sigma_max^2 + 1) ("leading"), as diffusers' `init_noise_sigma`."""
    if config.sampler != "euler":
        return 1.0
    schedule = timesteps_and_sigmas(config, num_steps)
    sigma_max = float(max(schedule.sigmas.max(), schedule.sigmas_next.max()))
    if config.timestep_spacing in ("linspace", "trailing"):
        return sigma_max
    return math.sqrt(sigma_max**2 + 1)


# ---------------------------------------------------------------------------------------------
# Solver loops: MindSpore tensors, coefficients as Python floats


def _vp(sigma: float) -> tuple[float, float]:
    """(alpha, sigma_vp) of a variance-exploding sigma: x_t = alpha x0 + sigma_vp eps."""
    if math.isinf(sigma):  # alpha_bar 0: the last timestep of a zero-terminal-SNR schedule (ddim)
        return 0.0, 1.0
    alpha = 1.0 / math.sqrt(sigma * sigma + 1.0)
    return alpha, sigma * alpha


def _x0_and_eps(out: ms.Tensor, x: ms.Tensor, alpha: float, sigma: float, prediction_type: str):
    """(x0, eps) from the model output at the variance-preserving sample x = alpha x0 + sigma eps."""
    if prediction_type == "epsilon":
        return (x - sigma * out) / alpha, out
    if prediction_type == "v_prediction":  # v = alpha eps - sigma x0
        return alpha * x - sigma * out, alpha * out + sigma * x
    return out, (x - alpha * out) / sigma  # "sample"


def _dpm_orders(config: SamplerConfig, n: int) -> list[int]:
    """The order of each of n DPM-Solver++ steps, as diffusers picks it: one more per step up to solver_order
    (a step of order k uses the k - 1 data predictions before it), the last step first order and the one
    before it at most second order in the cases diffusers says."""
    few_steps = config.lower_order_final and n < 15
    final_first = config.euler_at_final or few_steps or config.final_sigmas_type == "zero"
    orders = [min(config.solver_order, i + 1) for i in range(n)]
    if n and final_first:
        orders[-1] = 1
    if n > 1 and few_steps:
        orders[-2] = min(orders[-2], 2)
    return orders


def dpmpp(model_fn: ModelFn, x: ms.Tensor, schedule: Schedule, config: SamplerConfig,
          callback: Callback | None = None) -> ms.Tensor:
    """DPM-Solver++(2M) or (3M), multistep in log-SNR on the data prediction (Lu et al. 2022, arXiv:2211.01095;
    the third order as diffusers has it, from Lu et al. 2022, arXiv:2206.00927)."""
    timesteps, sigmas, sigmas_next = schedule
    n = len(timesteps)
    orders = _dpm_orders(config, n)
    old = []  # the data predictions of the last two steps, newest last
    for i, t in enumerate(timesteps):
        s, s_next = float(sigmas[i]), float(sigmas_next[i])
        alpha, sigma = _vp(s)
        denoised, _ = _x0_and_eps(model_fn(x, float(t)), x, alpha, sigma, config.prediction_type)
        if s_next == 0:  # only ever a first-order step: its limit is the data prediction itself
            x = denoised
        else:
            alpha_next, sigma_next = _vp(s_next)
            h = math.log(s / s_next)  # lambda_next - lambda, with lambda = log(alpha / sigma_vp) = -log(s)
            c = -alpha_next * math.expm1(-h)  # alpha_next (1 - e^-h)
            x = (sigma_next / sigma) * x + c * denoised
            if orders[i] > 1 and h:  # zero length (sigma_min at timestep 0 or -1): diffusers' D1 = 0
                r0 = math.log(float(sigmas[i - 1]) / s) / h  # h_previous / h
                d1 = (denoised - old[-1]) * (1.0 / r0)
                if orders[i] == 2:
                    k = 0.5 * c if config.solver_type == "midpoint" else alpha_next * (1.0 - c / (alpha_next * h))
                    x = x + k * d1
                else:
                    r1 = math.log(float(sigmas[i - 2]) / float(sigmas[i - 1])) / h
                    d1_1 = (old[-1] - old[-2]) * (1.0 / r1)
                    d2 = (d1 - d1_1) * (1.0 / (r0 + r1))
                    d1 = d1 + r0 * d2
                    x = x + (alpha_next * (math.expm1(-h) / h + 1.0)) * d1 \
                        - (alpha_next * ((math.expm1(-h) + h) / (h * h) - 0.5)) * d2
        old = [*old[-1:], denoised]
        if callback is not None:
            callback(i, n)
    return x


def ddim(model_fn: ModelFn, x: ms.Tensor, schedule: Schedule, config: SamplerConfig,
         callback: Callback | None = None) -> ms.Tensor:
    """DDIM with eta = 0, the deterministic implicit sampler (Song et al. 2020, arXiv:2010.02502, eq. 12)."""
    timesteps, sigmas, sigmas_next = schedule
    for i, t in enumerate(timesteps):
        alpha, sigma = _vp(float(sigmas[i]))
        alpha_next, sigma_next = _vp(float(sigmas_next[i]))
        x0, eps = _x0_and_eps(model_fn(x, float(t)), x, alpha, sigma, config.prediction_type)
        if config.clip_sample:
            x0 = ops.clamp(x0, -config.clip_sample_range, config.clip_sample_range)
        x = alpha_next * x0 + sigma_next * eps
        if callback is not None:
            callback(i, len(timesteps))
    return x


def euler(model_fn: ModelFn, x: ms.Tensor, schedule: Schedule, config: SamplerConfig,
          callback: Callback | None = None) -> ms.Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - x0) / sigma (Karras et al. 2022, Alg. 2, no churn).

    x is the variance-exploding sample x_t / alpha; the model sees it rescaled to variance-preserving.
    """
    timesteps, sigmas, sigmas_next = schedule
    for i, t in enumerate(timesteps):
        s, s_next = float(sigmas[i]), float(sigmas_next[i])
        out = model_fn(x / math.sqrt(s * s + 1.0), float(t))
        if config.prediction_type == "epsilon":
            denoised = x - s * out
        elif config.prediction_type == "v_prediction":
            denoised = out * (-s / math.sqrt(s * s + 1.0)) + x / (s * s + 1.0)
        else:  # "sample"
            denoised = out
        d = (x - denoised) / s
        x = x + d * (s_next - s)
        if callback is not None:
            callback(i, len(timesteps))
    return x


_SOLVERS = {"dpm++": dpmpp, "ddim": ddim, "euler": euler}


def sample(model_fn: ModelFn, x: ms.Tensor, config: SamplerConfig, num_steps: int,
           callback: Callback | None = None) -> ms.Tensor:
    """Run the sampler of `config` for `num_steps` steps and return the final latent (B, C, H, W).

    model_fn(x_in, t) -> output (B, C, H, W), the already guided prediction of the kind
    `config.prediction_type` names; x_in has x's dtype and t is the float timestep.
    x: the initial latent (B, C, H, W), unit noise ALREADY multiplied by
    `init_noise_sigma(config, num_steps)`, as diffusers' pipelines prepare latents; the caller scales.
    The model output should have x's dtype; the loop runs in that dtype (diffusers steps in float32).
    """
    return _SOLVERS[config.sampler](model_fn, x, timesteps_and_sigmas(config, num_steps), config, callback)
