// JavaScript surface of the optional collectives (lib/dist wraps it):
//   distInfo() -> { mpi: { loaded, library, version, error, initialized, rank, size, localRank, localSize },
//                   nccl: { loaded, library, version, versionString, error } }
//   distProbe('mpi' | 'nccl', path) -> { loaded, library, version, error }   (uncached; tests)
//   mpiInit() -> { rank, size, localRank, localSize }, mpiFinalize()
//   mpiAllreduce(Float32Array | Float64Array | BigInt64Array)   sum over ranks, in place
//   mpiBroadcast(TypedArray, root)                              in place
//   mpiAllgather(TypedArray) -> TypedArray of size() blocks     (rank r's block at r * length)
//   mpiReduceScatter(TypedArray of size() blocks) -> TypedArray (the sum of every rank's block number rank())
//   mpiBarrier(), mpiAbort(code)
//   ncclUniqueId() -> Uint8Array(128)                    (rank 0's id for the torchrun-style rendezvous)
//   mpiWatchdog(intervalMs, timeoutMs) -> started   (heartbeats; a silent rank ends the run, named on stderr)
//   ncclWorldInit(uniqueId, rank, size, 'cuda' | 'emulated')   the torchrun-style world's communicator
//   ncclWorldAllreduce(Float64Array | Float32Array | BigInt64Array), ncclWorldBroadcast(TypedArray, root),
//   ncclWorldAllgather(TypedArray) -> TypedArray of size() blocks, ncclWorldBarrier(), ncclWorldAbort(code),
//   ncclWorldWatch(host, port, intervalMs, timeoutMs)    heartbeats to rank 0: a dead or silent rank ends the run,
//   named ncclWorldDestroy()                                   (the same collectives as mpi*, staged through the
//   device)
// The collectives block the calling (main) thread: every call from the thread that initialised MPI.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "dist/liveness.h"
#include "dist/mpi_loader.h"
#include "dist/nccl_comm.h"
#include "dist/nccl_loader.h"
#include "dist/nccl_world.h"
#include "node/napi_util.h"

namespace recode {
namespace {

Napi::Object mpi_status_object(Napi::Env env, const mpi::Status& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loaded", s.loaded);
  o.Set("library", s.library);
  o.Set("version", s.version);
  o.Set("error", s.error);
  return o;
}

Napi::Object nccl_status_object(Napi::Env env, const nccl::Status& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loaded", s.loaded);
  o.Set("library", s.library);
  o.Set("version", s.version);
  o.Set("versionString", nccl::version_string(s.version));
  o.Set("error", s.error);
  o.Set("hostMemory", s.host_memory);
  return o;
}

Napi::Object ranks_object(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", mpi::rank());
  o.Set("size", mpi::size());
  o.Set("localRank", mpi::local_rank());
  o.Set("localSize", mpi::local_size());
  return o;
}

Napi::Value dist_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object m = mpi_status_object(env, mpi::status());
  m.Set("initialized", mpi::initialized());
  Napi::Object r = ranks_object(env);
  for (const char* k : {"rank", "size", "localRank", "localSize"}) m.Set(k, r.Get(k));
  o.Set("mpi", m);
  o.Set("nccl", nccl_status_object(env, nccl::status()));
  return o;
}

Napi::Value dist_probe(const Napi::CallbackInfo& info) {
  Args a{info, "distProbe"};
  std::string which = a.string(0, "engine");
  std::string path = a.string(1, "path");
  if (which == "mpi") return mpi_status_object(info.Env(), mpi::probe_library(path));
  if (which == "nccl") return nccl_status_object(info.Env(), nccl::probe_library(path));
  a.fail(0, "(engine) must be 'mpi' or 'nccl'");
  return info.Env().Undefined();
}

Napi::Value mpi_init(const Napi::CallbackInfo& info) {
  mpi::init();
  return ranks_object(info.Env());
}

Napi::Value mpi_finalize(const Napi::CallbackInfo& info) {
  mpi::finalize();
  return info.Env().Undefined();
}

// The element type of a typed array, and its size in bytes.
mpi::Type type_of(const Args& a, size_t i, Napi::TypedArray t, bool bytes_ok) {
  switch (t.TypedArrayType()) {
    case napi_float32_array:
      return mpi::Type::F32;
    case napi_float64_array:
      return mpi::Type::F64;
    case napi_bigint64_array:
      return mpi::Type::I64;
    default:
      if (bytes_ok) return mpi::Type::Byte;
      a.fail(i, "must be a Float32Array, Float64Array or BigInt64Array");
  }
  return mpi::Type::Byte;
}

Napi::TypedArray typed_arg(const Args& a, size_t i) {
  Napi::Value v = a.at(i);
  if (!v.IsTypedArray()) a.fail(i, "must be a typed array");
  return v.As<Napi::TypedArray>();
}

void* data_of(Napi::TypedArray t) { return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(); }

Napi::Value mpi_allreduce(const Napi::CallbackInfo& info) {
  Args a{info, "mpiAllreduce"};
  Napi::TypedArray t = typed_arg(a, 0);
  mpi::allreduce_sum(data_of(t), (int64_t)t.ElementLength(), type_of(a, 0, t, false));
  return info.Env().Undefined();
}

Napi::Value mpi_broadcast(const Napi::CallbackInfo& info) {
  Args a{info, "mpiBroadcast"};
  Napi::TypedArray t = typed_arg(a, 0);
  int root = (int)a.integer(1, "root", 0, mpi::size() - 1);
  mpi::broadcast(data_of(t), (int64_t)t.ByteLength(), root);
  return info.Env().Undefined();
}

// A new typed array of the same kind as `like` with `count` elements.
Napi::TypedArray same_kind(Napi::Env env, Napi::TypedArray like, size_t count) {
  const size_t elem = like.ElementLength() ? like.ByteLength() / like.ElementLength() : 1;
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, count * elem);
  napi_value out;
  NAPI_THROW_IF_FAILED(env, napi_create_typedarray(env, like.TypedArrayType(), count, buf, 0, &out),
                       Napi::TypedArray());
  return Napi::TypedArray(env, out);
}

Napi::Value mpi_allgather(const Napi::CallbackInfo& info) {
  Args a{info, "mpiAllgather"};
  Napi::TypedArray t = typed_arg(a, 0);
  mpi::Type ty = type_of(a, 0, t, true);
  const size_t n = ty == mpi::Type::Byte ? t.ByteLength() : t.ElementLength();
  if (ty == mpi::Type::Byte && t.TypedArrayType() != napi_uint8_array)
    a.fail(0, "must be a Float32Array, Float64Array, BigInt64Array or Uint8Array");
  Napi::TypedArray out = same_kind(info.Env(), t, t.ElementLength() * (size_t)mpi::size());
  mpi::allgather(data_of(t), data_of(out), (int64_t)n, ty);
  return out;
}

Napi::Value mpi_reduce_scatter(const Napi::CallbackInfo& info) {
  Args a{info, "mpiReduceScatter"};
  Napi::TypedArray t = typed_arg(a, 0);
  mpi::Type ty = type_of(a, 0, t, false);
  const size_t n = (size_t)mpi::size();
  if (t.ElementLength() % n != 0)
    a.fail(0, "must hold size() blocks of equal length (" + std::to_string(t.ElementLength()) + " elements, " +
                  std::to_string(n) + " ranks)");
  Napi::TypedArray out = same_kind(info.Env(), t, t.ElementLength() / n);
  mpi::reduce_scatter_sum(data_of(t), data_of(out), (int64_t)(t.ElementLength() / n), ty);
  return out;
}

Napi::Value mpi_watchdog(const Napi::CallbackInfo& info) {
  Args a{info, "mpiWatchdog"};
  const int interval = (int)a.integer(0, "intervalMs", 1, 3600000);
  const int timeout = (int)a.integer(1, "timeoutMs", 1, 86400000);
  return Napi::Boolean::New(info.Env(), mpi::start_watchdog(interval, timeout));
}

// ncclUniqueId() -> Uint8Array(128): what rank 0 hands every rank at the rendezvous (ERR_NCCL_UNAVAILABLE without
// NCCL).
Napi::Value nccl_unique_id(const Napi::CallbackInfo& info) {
  const nccl::Api& api = nccl::api();
  nccl::ncclUniqueId id{};
  nccl::check(api.GetUniqueId(&id), "ncclGetUniqueId", 0);
  auto out = Napi::Uint8Array::New(info.Env(), sizeof id.internal);
  std::memcpy(out.Data(), id.internal, sizeof id.internal);
  return out;
}

Napi::Value mpi_barrier(const Napi::CallbackInfo& info) {
  mpi::barrier();
  return info.Env().Undefined();
}

Napi::Value mpi_abort(const Napi::CallbackInfo& info) {
  Args a{info, "mpiAbort"};
  mpi::abort((int)a.integer(0, "code", 0, 255));
}

// ---- the world of a torchrun / Slurm launch without MPI: small host collectives through NCCL -----------------
std::unique_ptr<nccl::HostWorld> g_world;

nccl::HostWorld& host_world(const char* what) {
  if (!g_world) throw Error("ERR_DIST", std::string(what) + ": the NCCL world is not joined (ncclWorldInit first)");
  return *g_world;
}

nccl::ncclDataType_t nccl_type_of(const Args& a, size_t i, Napi::TypedArray t) {
  switch (t.TypedArrayType()) {
    case napi_float32_array:
      return nccl::ncclFloat32;
    case napi_float64_array:
      return nccl::ncclFloat64;
    case napi_bigint64_array:
      return nccl::ncclInt64;
    default:
      a.fail(i, "must be a Float32Array, Float64Array or BigInt64Array");
  }
}

Napi::Value nccl_world_init(const Napi::CallbackInfo& info) {
  Args a{info, "ncclWorldInit"};
  Napi::TypedArray id = typed_arg(a, 0);
  if (id.ByteLength() != sizeof(nccl::ncclUniqueId)) a.fail(0, "must hold the 128 bytes of an NCCL unique id");
  const int size = (int)a.integer(2, "size", 1, 1 << 20);
  const int rank = (int)a.integer(1, "rank", 0, size - 1);
  const std::string device = a.string(3, "device");
  if (device != "cuda" && device != "emulated") a.fail(3, "must be 'cuda' or 'emulated'");
  if (g_world) throw Error("ERR_DIST", "ncclWorldInit: this process already joined an NCCL world");
  g_world =
      std::make_unique<nccl::HostWorld>(data_of(id), rank, size, device == "cuda" ? Device::CUDA : Device::Emulated);
  return info.Env().Undefined();
}

Napi::Value nccl_world_allreduce(const Napi::CallbackInfo& info) {
  Args a{info, "ncclWorldAllreduce"};
  Napi::TypedArray t = typed_arg(a, 0);
  host_world("ncclWorldAllreduce").allreduce_sum(data_of(t), t.ElementLength(), nccl_type_of(a, 0, t));
  return info.Env().Undefined();
}

Napi::Value nccl_world_broadcast(const Napi::CallbackInfo& info) {
  Args a{info, "ncclWorldBroadcast"};
  Napi::TypedArray t = typed_arg(a, 0);
  nccl::HostWorld& w = host_world("ncclWorldBroadcast");
  w.broadcast(data_of(t), t.ByteLength(), (int)a.integer(1, "root", 0, w.size() - 1));
  return info.Env().Undefined();
}

Napi::Value nccl_world_allgather(const Napi::CallbackInfo& info) {
  Args a{info, "ncclWorldAllgather"};
  Napi::TypedArray t = typed_arg(a, 0);
  nccl::HostWorld& w = host_world("ncclWorldAllgather");
  Napi::TypedArray out = same_kind(info.Env(), t, t.ElementLength() * (size_t)w.size());
  w.allgather(data_of(t), data_of(out), t.ByteLength());
  return out;
}

Napi::Value nccl_world_barrier(const Napi::CallbackInfo& info) {
  host_world("ncclWorldBarrier").barrier();
  return info.Env().Undefined();
}

// A failed rank ends: its communicator aborted (so nothing of it waits on the device), then the process.
Napi::Value nccl_world_abort(const Napi::CallbackInfo& info) {
  Args a{info, "ncclWorldAbort"};
  const int code = (int)a.integer(0, "code", 0, 255);
  if (g_world) g_world->abort();
  std::fflush(stderr);
  std::_Exit(code);
}

// Heartbeats to rank 0 over MASTER_ADDR:MASTER_PORT (src/dist/liveness.h): a rank that dies or goes silent ends the run
// on every rank, named, its communicator aborted first.
Napi::Value nccl_world_watch(const Napi::CallbackInfo& info) {
  Args a{info, "ncclWorldWatch"};
  nccl::HostWorld& w = host_world("ncclWorldWatch");
  const std::string host = a.string(0, "host");
  const int port = (int)a.integer(1, "port", 1, 65535);
  const int interval = (int)a.integer(2, "intervalMs", 1, 3600000);
  const int timeout = (int)a.integer(3, "timeoutMs", 1, 86400000);
  liveness::start(
      w.rank(), w.size(), host, port, interval, timeout,
      [] {
        if (g_world) g_world->abort();
      },
      [] { return g_world ? g_world->async_error() : std::string(); });
  return info.Env().Undefined();
}

Napi::Value nccl_world_destroy(const Napi::CallbackInfo& info) {
  liveness::stop();
  g_world.reset();
  return info.Env().Undefined();
}

}  // namespace

RECODE_EXPORT("distInfo", dist_info);
RECODE_EXPORT("distProbe", dist_probe);
RECODE_EXPORT("mpiInit", mpi_init);
RECODE_EXPORT("mpiFinalize", mpi_finalize);
RECODE_EXPORT("mpiAllreduce", mpi_allreduce);
RECODE_EXPORT("mpiBroadcast", mpi_broadcast);
RECODE_EXPORT("mpiAllgather", mpi_allgather);
RECODE_EXPORT("mpiReduceScatter", mpi_reduce_scatter);
RECODE_EXPORT("mpiBarrier", mpi_barrier);
RECODE_EXPORT("mpiAbort", mpi_abort);
RECODE_EXPORT("mpiWatchdog", mpi_watchdog);
RECODE_EXPORT("ncclUniqueId", nccl_unique_id);
RECODE_EXPORT("ncclWorldInit", nccl_world_init);
RECODE_EXPORT("ncclWorldAllreduce", nccl_world_allreduce);
RECODE_EXPORT("ncclWorldBroadcast", nccl_world_broadcast);
RECODE_EXPORT("ncclWorldAllgather", nccl_world_allgather);
RECODE_EXPORT("ncclWorldBarrier", nccl_world_barrier);
RECODE_EXPORT("ncclWorldAbort", nccl_world_abort);
RECODE_EXPORT("ncclWorldWatch", nccl_world_watch);
RECODE_EXPORT("ncclWorldDestroy", nccl_world_destroy);

}  // namespace recode
