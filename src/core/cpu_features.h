// Run-time SIMD dispatch. Prebuilt binaries target baseline x86-64; code paths compiled for AVX2
// (files named *_avx2.cpp) are entered only when the CPU has AVX2 and FMA, and when the active level
// allows it. The active level can be lowered (RECODE_SIMD=baseline, or set_simd_level) so tests cover
// every path on one machine.
#pragma once

#include <string>

namespace recode {

enum class SimdLevel { Baseline = 0, AVX2 = 1 };

SimdLevel detected_simd_level();  // what the CPU supports (among the levels this build has code for)
SimdLevel simd_level();           // what kernels use now: min(detected, requested)
void set_simd_level(SimdLevel requested);
const char* simd_level_name(SimdLevel level);
std::string cpu_model_name();

}  // namespace recode
