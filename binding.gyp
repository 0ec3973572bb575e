# Fallback build (node-gyp) for machines without CMake: the CPU addon only, no CUDA library.
# The source list comes from the same glob rules as CMakeLists.txt (lib/tools/sources.cjs).
{
  "targets": [
    {
      "target_name": "recode_avx2",
      "type": "static_library",
      "sources": ["<!@(node lib/tools/sources.cjs avx2)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "src", "cuda"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-O3", "-fPIC", "-mavx2", "-mfma", "-mbmi", "-mbmi2", "-mpopcnt"]
    },
    {
      "target_name": "recode",
      "dependencies": ["recode_avx2"],
      "sources": ["<!@(node lib/tools/sources.cjs base)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "src", "cuda"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-O3", "-fvisibility=hidden"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
