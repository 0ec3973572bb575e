// NCCL (libnccl.so.2), opened with dlopen on first use: optional like the CUDA library. status() says whether it
// was found, where, which version, and why not; api() gives the resolved entry points or throws saying why.
#pragma once

#include <string>

#include "dist/nccl_api.h"

namespace recode::nccl {

struct Api {
  ncclGetVersion_t GetVersion;
  ncclGetUniqueId_t GetUniqueId;
  ncclCommInitRank_t CommInitRank;
  ncclCommDestroy_t CommDestroy;
  ncclAllReduce_t AllReduce;
  ncclReduceScatter_t ReduceScatter;
  ncclAllGather_t AllGather;
  ncclBroadcast_t Broadcast;
  ncclGetErrorString_t GetErrorString;
  ncclGroupStart_t GroupStart;
  ncclGroupEnd_t GroupEnd;
  ncclCommAbort_t CommAbort;                  // nullptr when the library lacks it
  ncclCommGetAsyncError_t CommGetAsyncError;  // nullptr when the library lacks it
};

struct Status {
  bool loaded = false;
  std::string library;  // the name or path given to dlopen
  int version = 0;      // ncclGetVersion's code (major * 10000 + minor * 100 + patch since 2.9)
  std::string error;    // why NCCL is unavailable ("" when usable)
  // The library reduces host memory, not GPU memory: recode's test NCCL over MPI (test/fixtures/nccl_mpi.c, marked
  // by its symbol recode_nccl_host_memory), for device 'emulated' whose "device" arrays live on the host.
  bool host_memory = false;
};

const Status& status();  // probes once (RECODE_NCCL_LIBRARY overrides the library name)
// Probes a given library without caching (tests cover the found / not-found / wrong-library paths with it).
Status probe_library(const std::string& library);
const Api& api();  // throws recode::Error(ERR_NCCL_UNAVAILABLE) saying why
std::string version_string(int code);

}  // namespace recode::nccl
