#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace recode {
namespace {

SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2") &&
      __builtin_cpu_supports("popcnt"))
    return SimdLevel::AVX2;
#endif
  return SimdLevel::Baseline;
}

SimdLevel initial_request() {
  const char* env = std::getenv("RECODE_SIMD");
  if (env && std::strcmp(env, "baseline") == 0) return SimdLevel::Baseline;
  return SimdLevel::AVX2;
}

std::atomic<int> g_requested{(int)initial_request()};

}  // namespace

SimdLevel detected_simd_level() {
  static const SimdLevel level = detect();
  return level;
}

SimdLevel simd_level() {
  int d = (int)detected_simd_level(), r = g_requested.load(std::memory_order_relaxed);
  return (SimdLevel)(d < r ? d : r);
}

void set_simd_level(SimdLevel requested) { g_requested.store((int)requested); }

const char* simd_level_name(SimdLevel level) { return level == SimdLevel::AVX2 ? "avx2" : "baseline"; }

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

}  // namespace recode
