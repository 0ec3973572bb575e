#include "dist/mpi_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "dist/recode_mpi.h"

namespace recode::mpi {
namespace {

struct Shim {
#define SHIM_FN(name) decltype(&recode_mpi_##name) name = nullptr
  SHIM_FN(abi_version);
  SHIM_FN(library_version);
  SHIM_FN(init);
  SHIM_FN(initialized);
  SHIM_FN(finalize);
  SHIM_FN(rank);
  SHIM_FN(size);
  SHIM_FN(local_rank);
  SHIM_FN(local_size);
  SHIM_FN(allreduce_sum);
  SHIM_FN(broadcast);
  SHIM_FN(allgather);
  SHIM_FN(reduce_scatter_sum);
  SHIM_FN(barrier);
  SHIM_FN(abort);
  SHIM_FN(error_string);
  SHIM_FN(watchdog_start);
  SHIM_FN(watchdog_stop);
  SHIM_FN(reduce_scatterv_sum);
  SHIM_FN(allgatherv);
#undef SHIM_FN
};

Shim g_shim;

std::string addon_directory() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&addon_directory), &info) && info.dli_fname) {
    std::string path = info.dli_fname;
    auto slash = path.rfind('/');
    if (slash != std::string::npos) return path.substr(0, slash);
  }
  return ".";
}

Status open_shim(const std::string& path, Shim& out, bool keep) {
  Status s;
  s.library = path;
  // RTLD_GLOBAL: Open MPI loads its own components with dlopen and they resolve libmpi's symbols globally.
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    const char* why = dlerror();
    s.error = "the MPI shim could not be loaded (" + std::string(why ? why : "unknown reason") +
              "); it is built when CMake finds an MPI (Debian: apt-get install openmpi-bin libopenmpi-dev, then "
              "reinstall recode)";
    return s;
  }
  struct Entry {
    const char* name;
    void** slot;
  };
#define E(n) \
  { "recode_mpi_" #n, reinterpret_cast<void**>(&out.n) }
  const Entry entries[] = {E(abi_version),
                           E(library_version),
                           E(init),
                           E(initialized),
                           E(finalize),
                           E(rank),
                           E(size),
                           E(local_rank),
                           E(local_size),
                           E(allreduce_sum),
                           E(broadcast),
                           E(allgather),
                           E(reduce_scatter_sum),
                           E(barrier),
                           E(abort),
                           E(error_string),
                           E(watchdog_start),
                           E(watchdog_stop),
                           E(reduce_scatterv_sum),
                           E(allgatherv)};
#undef E
  for (const Entry& e : entries) {
    *e.slot = dlsym(h, e.name);
    if (!*e.slot) {
      s.error = path + " lacks " + e.name + " (not recode's MPI shim, or a mismatched build)";
      out = Shim{};
      return s;
    }
  }
  if (out.abi_version() != RECODE_MPI_ABI_VERSION) {
    s.error = path + " has ABI version " + std::to_string(out.abi_version()) + ", this addon needs " +
              std::to_string(RECODE_MPI_ABI_VERSION) + " (mismatched build)";
    out = Shim{};
    return s;
  }
  char v[512] = {0};
  if (out.library_version(v, sizeof v) == 0) s.version = v;
  s.loaded = true;
  (void)keep;  // the shim stays mapped: unloading a library that loaded MPI is not safe
  return s;
}

const Shim& shim() {
  if (!status().loaded) throw Error("ERR_DIST", "MPI is unavailable: " + status().error);
  return g_shim;
}

void check(int rc, const char* what) {
  if (rc == 0) return;
  char msg[512] = {0};
  g_shim.error_string(rc, msg, sizeof msg);
  throw Error("ERR_DIST", std::string("MPI ") + what + " failed on rank " + std::to_string(rank()) + ": " + msg);
}

}  // namespace

const Status& status() {
  static Status s = [] {
    const char* override_path = std::getenv("RECODE_MPI_LIBRARY");
    return open_shim(override_path && *override_path ? override_path : addon_directory() + "/librecode_mpi.so", g_shim,
                     true);
  }();
  return s;
}

Status probe_library(const std::string& path) {
  Shim scratch;
  return open_shim(path, scratch, false);
}

void init() {
  const Shim& s = shim();
  if (s.initialized()) return;
  int rc = s.init();
  if (rc != 0) {
    char msg[512] = {0};
    s.error_string(rc, msg, sizeof msg);
    throw Error("ERR_DIST", std::string("MPI_Init_thread failed: ") + msg);
  }
}

bool initialized() { return status().loaded && g_shim.initialized(); }
void finalize() {
  if (initialized()) g_shim.finalize();
}
int rank() { return initialized() ? g_shim.rank() : 0; }
int size() { return initialized() ? g_shim.size() : 1; }
int local_rank() { return initialized() ? g_shim.local_rank() : 0; }
int local_size() { return initialized() ? g_shim.local_size() : 1; }

static void need_init(const char* what) {
  if (!initialized()) throw Error("ERR_DIST", std::string(what) + ": MPI is not initialised (call init first)");
}

void allreduce_sum(void* buf, int64_t count, Type t) {
  need_init("allreduce");
  check(shim().allreduce_sum(buf, count, (int)t), "allreduce");
}
void broadcast(void* buf, int64_t bytes, int root) {
  need_init("broadcast");
  check(shim().broadcast(buf, bytes, root), "broadcast");
}
void allgather(const void* send, void* recv, int64_t count, Type t) {
  need_init("allgather");
  check(shim().allgather(send, recv, count, (int)t), "allgather");
}
void reduce_scatter_sum(const void* send, void* recv, int64_t count, Type t) {
  need_init("reduce-scatter");
  check(shim().reduce_scatter_sum(send, recv, count, (int)t), "reduce-scatter");
}
void reduce_scatterv_sum(const void* send, void* recv, const int64_t* counts, Type t) {
  need_init("reduce-scatter");
  check(shim().reduce_scatterv_sum(send, recv, counts, (int)t), "reduce-scatter");
}
void allgatherv(const void* send, void* recv, const int64_t* counts, Type t) {
  need_init("allgather");
  check(shim().allgatherv(send, recv, counts, (int)t), "allgather");
}
void barrier() {
  need_init("barrier");
  check(shim().barrier(), "barrier");
}
void abort(int code) {
  if (initialized()) g_shim.abort(code);
  std::_Exit(code);
}

bool start_watchdog(int interval_ms, int timeout_ms) {
  need_init("watchdog");
  return shim().watchdog_start(interval_ms, timeout_ms) == 0;
}

void allreduce_sum_identical(float* buf, int64_t count) {
  need_init("allreduce");
  const int64_t n = size();
  if (n == 1) return;
  const int64_t block = (count + n - 1) / n;
  std::vector<float> padded((size_t)(block * n), 0.0f), mine((size_t)block);
  std::memcpy(padded.data(), buf, (size_t)count * sizeof(float));
  check(shim().reduce_scatter_sum(padded.data(), mine.data(), block, (int)Type::F32), "reduce-scatter");
  check(shim().allgather(mine.data(), padded.data(), block, (int)Type::F32), "allgather");
  std::memcpy(buf, padded.data(), (size_t)count * sizeof(float));
}

}  // namespace recode::mpi
