#include "train/adapters.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "philox.h"

namespace recode {

bool dropout_keep(uint64_t seed, uint64_t counter, float p) {
  return philox::dropout_keep(seed, counter, philox::dropout_threshold(p));
}

void dropout_keep_range(uint64_t seed, uint64_t first, int64_t n, float p, uint8_t* keep) {
  if (p <= 0.0f) {
    std::fill(keep, keep + n, (uint8_t)1);
    return;
  }
  const double threshold = philox::dropout_threshold(p);
  int64_t i = 0;
  while (i < n) {  // one Philox block serves four consecutive counters
    const uint64_t c = first + (uint64_t)i;
    const philox::U32x4 r = philox::dropout_block(seed, c >> 2);
    for (uint64_t lane = c & 3; lane < 4 && i < n; ++lane, ++i)
      keep[i] = philox::dropout_word_kept(r.v[lane], threshold);
  }
}

namespace {

// drop(x): x with the dropout mask applied and kept values scaled by 1 / (1 - p); a copy of x when p = 0.
std::vector<float> dropped_input(const AdapterShape& sh, const AdapterWeights& w, const float* x) {
  std::vector<float> xd(x, x + sh.rows * sh.in);
  if (w.dropout <= 0.0f) return xd;
  const float keep_scale = 1.0f / (1.0f - w.dropout);
  parallel_for(sh.rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int64_t i = 0; i < sh.in; ++i) {
        int64_t idx = t * sh.in + i;
        xd[idx] = dropout_keep(w.seed, w.offset + (uint64_t)idx, w.dropout) ? x[idx] * keep_scale : 0.0f;
      }
  });
  return xd;
}

double dot(const float* a, const float* b, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += (double)a[i] * (double)b[i];
  return acc;
}

}  // namespace

void dora_weight_norm(const AdapterShape& sh, const AdapterWeights& w, float* weight_norm) {
  parallel_for(sh.out, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      double sq = 0.0;
      for (int64_t i = 0; i < sh.in; ++i) {
        double ba = 0.0;  // (B A)[o, i]
        for (int64_t j = 0; j < sh.rank; ++j) ba += (double)w.lora_b[o * sh.rank + j] * (double)w.lora_a[j * sh.in + i];
        double v = (double)w.weight[o * sh.in + i] + (double)w.scaling * ba;
        sq += v * v;
      }
      weight_norm[o] = (float)std::sqrt(sq);
    }
  });
}

void adapter_merge(const AdapterShape& sh, const AdapterWeights& w, float* merged) {
  parallel_for(sh.out, 1, [&](int64_t b, int64_t e) {
    std::vector<double> row(sh.in);
    for (int64_t o = b; o < e; ++o) {
      double sq = 0.0;
      for (int64_t i = 0; i < sh.in; ++i) {
        double ba = 0.0;
        for (int64_t j = 0; j < sh.rank; ++j) ba += (double)w.lora_b[o * sh.rank + j] * (double)w.lora_a[j * sh.in + i];
        row[i] = (double)w.weight[o * sh.in + i] + (double)w.scaling * ba;
        sq += row[i] * row[i];
      }
      // DoRA rescales each row to its magnitude; the norm is the one of the float32 weights PEFT would see.
      double factor = w.magnitude ? (double)w.magnitude[o] / (double)(float)std::sqrt(sq) : 1.0;
      for (int64_t i = 0; i < sh.in; ++i) merged[o * sh.in + i] = (float)(factor * row[i]);
    }
  });
}

void adapter_forward(const AdapterShape& sh, const AdapterWeights& w, const float* x, float* y, AdapterSaved& saved) {
  const bool dora = w.magnitude != nullptr;
  std::vector<float> xd = dropped_input(sh, w, x);
  if (dora) dora_weight_norm(sh, w, saved.weight_norm);
  parallel_for(sh.rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* xt = x + t * sh.in;
      const float* xdt = xd.data() + t * sh.in;
      float* ut = saved.lora_hidden + t * sh.rank;
      for (int64_t j = 0; j < sh.rank; ++j) ut[j] = (float)dot(xdt, w.lora_a + j * sh.in, sh.in);
      for (int64_t o = 0; o < sh.out; ++o) {
        double base = dot(xt, w.weight + o * sh.in, sh.in);
        double lora = dot(ut, w.lora_b + o * sh.rank, sh.rank);
        double bias = w.bias ? (double)w.bias[o] : 0.0;
        if (!dora) {
          y[t * sh.out + o] = (float)(base + bias + (double)w.scaling * lora);
        } else {
          double dropped_base = w.dropout > 0.0f ? dot(xdt, w.weight + o * sh.in, sh.in) : base;
          saved.dropped_base[t * sh.out + o] = (float)dropped_base;
          double c = (double)w.magnitude[o] / (double)saved.weight_norm[o];
          y[t * sh.out + o] = (float)(base + bias + (c - 1.0) * dropped_base + c * (double)w.scaling * lora);
        }
      }
    }
  });
}

void adapter_backward(const AdapterShape& sh, const AdapterWeights& w, const float* x, const float* dy,
                      const AdapterSaved& saved, AdapterGrads& grads) {
  const bool dora = w.magnitude != nullptr;
  const int64_t N = sh.rows, in = sh.in, out = sh.out, r = sh.rank;
  std::vector<float> xd = dropped_input(sh, w, x);
  const float* u = saved.lora_hidden;
  // Per-output factor of the adapter path: c = m / n for DoRA (n constant), 1 for LoRA.
  std::vector<double> c(out, 1.0);
  if (dora)
    for (int64_t o = 0; o < out; ++o) c[o] = (double)w.magnitude[o] / (double)saved.weight_norm[o];

  // dm_o = sum_t dy[t,o] * (drop(x) W^T + s * u B^T)[t,o] / n_o
  if (dora && grads.magnitude) {
    parallel_for(out, 1, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        double acc = 0.0;
        for (int64_t t = 0; t < N; ++t) {
          double lora = dot(u + t * r, w.lora_b + o * r, r);
          acc += (double)dy[t * out + o] * ((double)saved.dropped_base[t * out + o] + (double)w.scaling * lora);
        }
        double g = acc / (double)saved.weight_norm[o];
        grads.magnitude[o] = grads.accumulate ? (float)((double)grads.magnitude[o] + g) : (float)g;
      }
    });
  }
  // gl = dy * c * s: the gradient reaching the low-rank product u B^T.
  // dB[o,j] = sum_t gl[t,o] u[t,j]
  parallel_for(out, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o)
      for (int64_t j = 0; j < r; ++j) {
        double acc = 0.0;
        for (int64_t t = 0; t < N; ++t) acc += (double)dy[t * out + o] * (double)u[t * r + j];
        double g = acc * c[o] * (double)w.scaling;
        grads.lora_b[o * r + j] = grads.accumulate ? (float)((double)grads.lora_b[o * r + j] + g) : (float)g;
      }
  });
  // du[t,j] = sum_o gl[t,o] B[o,j]
  std::vector<double> du(N * r);
  parallel_for(N, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int64_t j = 0; j < r; ++j) {
        double acc = 0.0;
        for (int64_t o = 0; o < out; ++o) acc += (double)dy[t * out + o] * c[o] * (double)w.lora_b[o * r + j];
        du[t * r + j] = acc * (double)w.scaling;
      }
  });
  // dA[j,i] = sum_t du[t,j] drop(x)[t,i]
  parallel_for(r, 1, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j)
      for (int64_t i = 0; i < in; ++i) {
        double acc = 0.0;
        for (int64_t t = 0; t < N; ++t) acc += du[t * r + j] * (double)xd[t * in + i];
        grads.lora_a[j * in + i] = grads.accumulate ? (float)((double)grads.lora_a[j * in + i] + acc) : (float)acc;
      }
  });
  // dx = dy W (base path, undropped x) + mask/(1-p) * ((dy * (c - 1)) W + du A) (adapter paths, dropped x)
  if (grads.input) {
    const double keep_scale = w.dropout > 0.0f ? (double)(1.0f / (1.0f - w.dropout)) : 1.0;  // as in forward
    parallel_for(N, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        for (int64_t i = 0; i < in; ++i) {
          double base = 0.0, adapter = 0.0;
          for (int64_t o = 0; o < out; ++o) {
            double g = (double)dy[t * out + o];
            double wv = (double)w.weight[o * in + i];
            base += g * wv;
            if (dora) adapter += g * (c[o] - 1.0) * wv;
          }
          for (int64_t j = 0; j < r; ++j) adapter += du[t * r + j] * (double)w.lora_a[j * in + i];
          int64_t idx = t * in + i;
          double mask =
              w.dropout > 0.0f ? (dropout_keep(w.seed, w.offset + (uint64_t)idx, w.dropout) ? keep_scale : 0.0) : 1.0;
          grads.input[idx] = (float)(base + mask * adapter);
        }
    });
  }
}

}  // namespace recode
