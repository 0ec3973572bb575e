// Online log-sum-exp state shared by the CPU and CUDA log-probability code: over the values z seen so far,
// m = max z, s = sum exp(z - m), a = sum exp(z - m) (z - m). Then lse = m + log s and
// entropy = log s - a / s. Two states merge exactly (up to rounding), so chunks and threads combine freely.
#pragma once

#include <cmath>

#include "philox.h"  // RECODE_HD

namespace recode::logprob {

RECODE_HD float lexp(float x) { return expf(x); }
RECODE_HD double lexp(double x) { return ::exp(x); }
RECODE_HD float llog(float x) { return logf(x); }
RECODE_HD double llog(double x) { return ::log(x); }

// F is float on the GPU (each thread sums few values, then a tree merge) and double on the CPU (one
// sequential pass per row).
template <class F>
struct Lse {
  F m;
  F s;
  F a;
};

template <class F>
RECODE_HD Lse<F> lse_empty() {
  return Lse<F>{(F)-INFINITY, (F)0, (F)0};
}

template <class F>
RECODE_HD Lse<F> lse_add(Lse<F> st, F z) {
  if (z == (F)-INFINITY) return st;
  if (z > st.m) {
    if (st.m == (F)-INFINITY) return Lse<F>{z, (F)1, (F)0};
    // rescale the old sums to the new max: (z_i - m) becomes (z_i - m) + (m - z)
    F d = st.m - z;
    F e = lexp(d);
    st.a = (st.a + st.s * d) * e;
    st.s = st.s * e + (F)1;
    st.m = z;
  } else {
    F d = z - st.m;
    F e = lexp(d);
    st.s += e;
    st.a += e * d;
  }
  return st;
}

template <class F>
RECODE_HD Lse<F> lse_merge(Lse<F> x, Lse<F> y) {
  if (x.m == (F)-INFINITY) return y;
  if (y.m == (F)-INFINITY) return x;
  if (y.m > x.m) {
    Lse<F> t = x;
    x = y;
    y = t;
  }
  F d = y.m - x.m;  // <= 0
  F e = lexp(d);
  x.s += y.s * e;
  x.a += (y.a + y.s * d) * e;
  return x;
}

template <class F>
RECODE_HD F lse_value(Lse<F> st) {
  return st.m + llog(st.s);
}
template <class F>
RECODE_HD F lse_entropy(Lse<F> st) {
  return llog(st.s) - st.a / st.s;
}

// d/dz_v of (dlogp * logp + dent * H) for one vocabulary entry.
RECODE_HD float dz_of(float z, float lse, float entropy, bool is_target, float dlogp, float dent) {
  float logp_v = z - lse;
  float p = expf(logp_v);
  float g = dlogp * ((is_target ? 1.f : 0.f) - p);
  if (dent != 0.f && p > 0.f) g -= dent * p * (logp_v + entropy);
  return g;
}

}  // namespace recode::logprob
