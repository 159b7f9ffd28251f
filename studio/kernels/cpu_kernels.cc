// Fused float32 CPU kernels for MindSpore's "aot" Custom op (studio/kernels/__init__.py builds and loads them).
//
// On the CPU every MindSpore elementwise op is a separate pass over memory, and broadcasting ones take a slow
// path; a chain such as LayerNorm -> * (1 + scale) -> + shift costs 7 passes. Each kernel here makes one pass
// (two or three over a row that stays in cache). Same functions as the op chains they replace (backend.py
// keeps those as the fallback and for GPU/Ascend); tests compare the two.
//
// Threads: std::threads started per call and joined, never OpenMP. libgomp's idle threads spin after a
// parallel region and took the cores from MindSpore's next kernel (a PixArt block ran 596 ms with OpenMP
// kernels, 476 ms once they slept); its wait policy is read once per process, which MindSpore starts first.
//
// ABI (MindSpore aot): int Kernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
// void *stream, void *extra); params holds the inputs, then the outputs. Scalars come in a float32 `cfg` tensor.

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

// Work below this many elements runs on the calling thread: starting a thread costs ~20-50 us.
constexpr int64_t kMinParallelElements = 1 << 16;

int Threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// f(begin, end) over [0, n) items split in contiguous ranges, one per thread; `elements` is the total work.
template <typename F>
void ParallelFor(int64_t n, int64_t elements, F f) {
  const int64_t threads = std::min<int64_t>({Threads(), n, std::max<int64_t>(1, elements / kMinParallelElements)});
  if (threads <= 1) {
    f(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t step = (n + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t begin = t * step, end = std::min(n, begin + step);
    if (begin < end) pool.emplace_back(f, begin, end);
  }
  f(0, std::min(n, step));
  for (auto &th : pool) th.join();
}

int64_t Numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

template <typename T>
T *Param(void **params, int i) {
  return static_cast<T *>(params[i]);
}

// exp of a clamped argument: finite for any input, so -ffast-math's no-inf assumption holds
inline float SafeExp(float z) { return std::exp(std::min(std::max(z, -87.0f), 88.0f)); }

// GELU, tanh approximation, as x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) (0.5 (1 + tanh u) = sigmoid(2u))
constexpr float kGeluA = 1.5957691216057308f;           // 2 sqrt(2 / pi)
constexpr float kGeluB = 0.044715f * 1.5957691216057308f;

inline float GeluTanh(float v) { return v / (1.0f + SafeExp(-v * (kGeluA + kGeluB * v * v))); }

inline float Silu(float v) { return v / (1.0f + SafeExp(-v)); }

}  // namespace

// y = gelu_tanh(x + bias): x (rows, cols) in any leading shape, bias (cols)
extern "C" int BiasGeluTanh(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = Param<float>(params, 0), *bias = Param<float>(params, 1);
  float *y = Param<float>(params, 2);
  const int64_t cols = shapes[1][0], rows = Numel(ndims[0], shapes[0]) / cols;
  ParallelFor(rows, rows * cols, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * cols;
      float *yr = y + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) yr[c] = GeluTanh(xr[c] + bias[c]);
    }
  });
  return 0;
}

// y = LayerNorm(x) * (1 + scale) + shift over the last axis, no affine; x (B, N, D), shift and scale (B, 1, D),
// cfg = [eps]. Centred two-pass variance, like torch's LayerNorm.
extern "C" int ModulatedLayerNorm(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = Param<float>(params, 0), *shift = Param<float>(params, 1), *scale = Param<float>(params, 2);
  const float eps = Param<float>(params, 3)[0];
  float *y = Param<float>(params, 4);
  const int64_t b = shapes[0][0], d = shapes[0][ndims[0] - 1], n = Numel(ndims[0], shapes[0]) / (b * d);
  ParallelFor(b * n, b * n * d, [=](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float *xr = x + row * d, *sh = shift + (row / n) * d, *sc = scale + (row / n) * d;
      float *yr = y + row * d;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < d; ++c) sum += xr[c];
      const float mean = sum / d;
      float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
      for (int64_t c = 0; c < d; ++c) sq += (xr[c] - mean) * (xr[c] - mean);
      const float rstd = 1.0f / std::sqrt(sq / d + eps);
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) yr[c] = (xr[c] - mean) * rstd * (1.0f + sc[c]) + sh[c];
    }
  });
  return 0;
}

// y = weight * x / sqrt(mean(x^2) + eps) over the last axis (T5's RMSNorm); x (rows, D), weight (D), cfg = [eps]
extern "C" int RmsNorm(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = Param<float>(params, 0), *weight = Param<float>(params, 1);
  const float eps = Param<float>(params, 2)[0];
  float *y = Param<float>(params, 3);
  const int64_t d = shapes[1][0], rows = Numel(ndims[0], shapes[0]) / d;
  ParallelFor(rows, rows * d, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * d;
      float *yr = y + r * d;
      float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
      for (int64_t c = 0; c < d; ++c) sq += xr[c] * xr[c];
      const float rstd = 1.0f / std::sqrt(sq / d + eps);
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) yr[c] = weight[c] * (xr[c] * rstd);
    }
  });
  return 0;
}

// out = x + gate * y; x and y (B, N, D), gate (B, 1, D)
extern "C" int GatedAdd(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = Param<float>(params, 0), *gate = Param<float>(params, 1), *y = Param<float>(params, 2);
  float *out = Param<float>(params, 3);
  const int64_t b = shapes[0][0], d = shapes[0][ndims[0] - 1], n = Numel(ndims[0], shapes[0]) / (b * d);
  ParallelFor(b * n, b * n * d, [=](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float *xr = x + row * d, *yr = y + row * d, *g = gate + (row / n) * d;
      float *o = out + row * d;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) o[c] = xr[c] + g[c] * yr[c];
    }
  });
  return 0;
}

// Sum and sum of squares of x + shift (a per-channel shift: a conv's bias not yet added) over each (sample,
// group) of x given as (B, G, C / G, H * W): out (B, G, 2) float64, so that the variance sum_sq / n - mean^2
// keeps its precision and tiles can add their sums. shift (C).
extern "C" int GroupSums(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = Param<float>(params, 0), *shift = Param<float>(params, 1);
  double *out = Param<double>(params, 2);
  const int64_t groups = shapes[0][1], per = shapes[0][2], hw = shapes[0][3], rows = shapes[0][0] * groups;
  ParallelFor(rows, rows * per * hw, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      double sum = 0.0, sq = 0.0;
      for (int64_t ch = 0; ch < per; ++ch) {
        const float *xc = x + (r * per + ch) * hw;
        const float s = shift[(r % groups) * per + ch];
#pragma omp simd reduction(+ : sum, sq)
        for (int64_t i = 0; i < hw; ++i) {
          const double v = static_cast<double>(xc[i]) + s;
          sum += v;
          sq += v * v;
        }
      }
      out[2 * r] = sum;
      out[2 * r + 1] = sq;
    }
  });
  return 0;
}

// y = (x + shift - mean) * rstd * weight + bias per channel, then SiLU if cfg[0] != 0; x (B, C, H, W), mean and
// rstd (B, G), shift, weight and bias (C).
extern "C" int GroupNormApply(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = Param<float>(params, 0), *mean = Param<float>(params, 1), *rstd = Param<float>(params, 2);
  const float *shift = Param<float>(params, 3), *weight = Param<float>(params, 4), *bias = Param<float>(params, 5);
  const bool silu = Param<float>(params, 6)[0] != 0.0f;
  float *y = Param<float>(params, 7);
  const int64_t b = shapes[0][0], c = shapes[0][1], groups = shapes[1][1];
  const int64_t hw = Numel(ndims[0], shapes[0]) / (b * c), per = c / groups;
  ParallelFor(b * c, b * c * hw, [=](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t ch = bc % c, g = (bc / c) * groups + ch / per;
      const float a = rstd[g] * weight[ch], s = bias[ch] + (shift[ch] - mean[g]) * a;
      const float *xr = x + bc * hw;
      float *yr = y + bc * hw;
      if (silu) {
#pragma omp simd
        for (int64_t i = 0; i < hw; ++i) yr[i] = Silu(xr[i] * a + s);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < hw; ++i) yr[i] = xr[i] * a + s;
      }
    }
  });
  return 0;
}

// out = x + y + bias per channel: a residual sum with the conv bias of y not yet added; x, y (B, C, H, W), bias (C)
extern "C" int AddChannelBias(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = Param<float>(params, 0), *y = Param<float>(params, 1), *bias = Param<float>(params, 2);
  float *out = Param<float>(params, 3);
  const int64_t c = shapes[2][0], planes = Numel(ndims[0], shapes[0]) / (shapes[0][2] * shapes[0][3]);
  const int64_t hw = shapes[0][2] * shapes[0][3];
  ParallelFor(planes, planes * hw, [=](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float bc = bias[p % c];
      const float *xp = x + p * hw, *yp = y + p * hw;
      float *o = out + p * hw;
#pragma omp simd
      for (int64_t i = 0; i < hw; ++i) o[i] = xp[i] + yp[i] + bc;
    }
  });
  return 0;
}

// The four output phases of a 2x upsampled convolution interleaved, plus a per-channel bias:
// out[b, c, 2i + p, 2j + q] = phase_pq[b, c, i, j] + bias[c]; each phase (B, C, H, W), out (B, C, 2H, 2W).
extern "C" int InterleavePhases(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *p00 = Param<float>(params, 0), *p01 = Param<float>(params, 1);
  const float *p10 = Param<float>(params, 2), *p11 = Param<float>(params, 3), *bias = Param<float>(params, 4);
  float *out = Param<float>(params, 5);
  const int64_t c = shapes[0][1], h = shapes[0][2], w = shapes[0][3], planes = shapes[0][0] * c;
  ParallelFor(planes * h, planes * h * w * 4, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {  // r = plane * h + i
      const float bc = bias[(r / h) % c];
      const float *a0 = p00 + r * w, *a1 = p01 + r * w, *b0 = p10 + r * w, *b1 = p11 + r * w;
      float *top = out + 4 * r * w, *bottom = top + 2 * w;  // rows 2i and 2i + 1 of the plane
      for (int64_t j = 0; j < w; ++j) {
        top[2 * j] = a0[j] + bc;
        top[2 * j + 1] = a1[j] + bc;
        bottom[2 * j] = b0[j] + bc;
        bottom[2 * j + 1] = b1[j] + bc;
      }
    }
  });
  return 0;
}
