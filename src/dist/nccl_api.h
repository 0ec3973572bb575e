// The part of NCCL's public C API recode calls, declared from NCCL's documented signatures (docs.nvidia.com/
// deeplearning/nccl, "API" section) so that nothing needs nccl.h: libnccl.so.2 is opened with dlopen at run time.
// Enum values are the documented ones; ncclUniqueId is 128 opaque bytes (NCCL_UNIQUE_ID_BYTES).
#pragma once

#include <cstddef>

namespace recode::nccl {

using ncclComm_t = struct ncclComm*;
using cudaStream_t = struct CUstream_st*;
struct ncclUniqueId {
  char internal[128];
};
enum ncclResult_t { ncclSuccess = 0, ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclInProgress = 7 };
enum ncclDataType_t { ncclUint8 = 1, ncclInt64 = 4, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9 };
enum ncclRedOp_t { ncclSum = 0 };

// One function-pointer type per entry point, named as NCCL names the function.
using ncclGetVersion_t = ncclResult_t (*)(int* version);
using ncclGetUniqueId_t = ncclResult_t (*)(ncclUniqueId* id);
using ncclCommInitRank_t = ncclResult_t (*)(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
using ncclCommDestroy_t = ncclResult_t (*)(ncclComm_t comm);
using ncclAllReduce_t = ncclResult_t (*)(const void* send, void* recv, size_t count, ncclDataType_t type,
                                         ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
using ncclReduceScatter_t = ncclResult_t (*)(const void* send, void* recv, size_t recvcount, ncclDataType_t type,
                                             ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
using ncclAllGather_t = ncclResult_t (*)(const void* send, void* recv, size_t sendcount, ncclDataType_t type,
                                         ncclComm_t comm, cudaStream_t stream);
using ncclBroadcast_t = ncclResult_t (*)(const void* send, void* recv, size_t count, ncclDataType_t type, int root,
                                         ncclComm_t comm, cudaStream_t stream);
using ncclGetErrorString_t = const char* (*)(ncclResult_t result);
using ncclGroupStart_t = ncclResult_t (*)();
using ncclGroupEnd_t = ncclResult_t (*)();
// Optional (resolved when present): the fault path of a world bootstrapped without MPI.
using ncclCommAbort_t = ncclResult_t (*)(ncclComm_t comm);
using ncclCommGetAsyncError_t = ncclResult_t (*)(ncclComm_t comm, ncclResult_t* async_error);

}  // namespace recode::nccl
