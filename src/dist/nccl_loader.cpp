#include "dist/nccl_loader.h"

#include <dlfcn.h>

#include <cstdlib>

#include "core/error.h"

namespace recode::nccl {
namespace {

Api g_api{};

Status open_library(const std::string& library, Api& out, bool keep) {
  Status s;
  s.library = library;
  void* h = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* why = dlerror();
    s.error = "NCCL could not be loaded (" + std::string(why ? why : "unknown reason") +
              "); install NCCL (libnccl2) or set RECODE_NCCL_LIBRARY to its path";
    return s;
  }
  struct Entry {
    const char* name;
    void** slot;
  };
  const Entry entries[] = {
      {"ncclGetVersion", reinterpret_cast<void**>(&out.GetVersion)},
      {"ncclGetUniqueId", reinterpret_cast<void**>(&out.GetUniqueId)},
      {"ncclCommInitRank", reinterpret_cast<void**>(&out.CommInitRank)},
      {"ncclCommDestroy", reinterpret_cast<void**>(&out.CommDestroy)},
      {"ncclAllReduce", reinterpret_cast<void**>(&out.AllReduce)},
      {"ncclReduceScatter", reinterpret_cast<void**>(&out.ReduceScatter)},
      {"ncclAllGather", reinterpret_cast<void**>(&out.AllGather)},
      {"ncclBroadcast", reinterpret_cast<void**>(&out.Broadcast)},
      {"ncclGetErrorString", reinterpret_cast<void**>(&out.GetErrorString)},
      {"ncclGroupStart", reinterpret_cast<void**>(&out.GroupStart)},
      {"ncclGroupEnd", reinterpret_cast<void**>(&out.GroupEnd)},
  };
  for (const Entry& e : entries) {
    *e.slot = dlsym(h, e.name);
    if (!*e.slot) {
      s.error = library + " lacks " + e.name + " (not NCCL, or a version older than 2.x)";
      dlclose(h);
      out = Api{};
      return s;
    }
  }
  out.CommAbort = reinterpret_cast<ncclCommAbort_t>(dlsym(h, "ncclCommAbort"));
  out.CommGetAsyncError = reinterpret_cast<ncclCommGetAsyncError_t>(dlsym(h, "ncclCommGetAsyncError"));
  int v = 0;
  if (out.GetVersion(&v) != ncclSuccess) {
    s.error = library + ": ncclGetVersion failed";
    dlclose(h);
    out = Api{};
    return s;
  }
  s.loaded = true;
  s.version = v;
  s.host_memory = dlsym(h, "recode_nccl_host_memory") != nullptr;
  if (!keep) dlclose(h);
  return s;
}

}  // namespace

std::string version_string(int v) {
  if (v <= 0) return "none";
  // before 2.9 the code was major * 1000 + minor * 100 + patch
  const int major = v >= 10000 ? v / 10000 : v / 1000;
  const int minor = v >= 10000 ? (v / 100) % 100 : (v / 100) % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(v % 100);
}

Status probe_library(const std::string& library) {
  Api scratch{};
  return open_library(library, scratch, false);
}

const Status& status() {
  static Status s = [] {
    const char* override_name = std::getenv("RECODE_NCCL_LIBRARY");
    return open_library(override_name && *override_name ? override_name : "libnccl.so.2", g_api, true);
  }();
  return s;
}

const Api& api() {
  if (!status().loaded) throw Error("ERR_NCCL_UNAVAILABLE", "NCCL is unavailable: " + status().error);
  return g_api;
}

}  // namespace recode::nccl
