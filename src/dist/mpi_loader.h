// The MPI shim (librecode_mpi.so beside the addon, built when CMake found an MPI), opened with dlopen on first
// use. status() says whether it loaded, from where, the MPI library's version, and why not. The collectives
// throw recode::Error(ERR_DIST) naming the MPI error; they must be called from the thread that called init() (the
// watchdog's heartbeats run on a thread of their own, on a communicator of their own).
#pragma once

#include <cstdint>
#include <string>

namespace recode::mpi {

struct Status {
  bool loaded = false;
  std::string library;  // where the shim was looked for / found
  std::string version;  // MPI_Get_library_version's first line
  std::string error;    // why MPI is unavailable ("" when usable)
};

const Status& status();                         // probes once (RECODE_MPI_LIBRARY overrides the path)
Status probe_library(const std::string& path);  // uncached, for tests

void init();  // MPI_Init_thread once; throws ERR_DIST when MPI is unavailable
bool initialized();
void finalize();
int rank();
int size();
int local_rank();
int local_size();

enum class Type { F32 = 0, F64 = 1, I64 = 2, Byte = 3 };
void allreduce_sum(void* buf, int64_t count, Type t);
void broadcast(void* buf, int64_t bytes, int root);
void allgather(const void* send, void* recv, int64_t count, Type t);
void reduce_scatter_sum(const void* send, void* recv, int64_t count, Type t);
// Variable blocks: counts[r] elements of rank r, one after another (ZeRO shards).
void reduce_scatterv_sum(const void* send, void* recv, const int64_t* counts, Type t);
void allgatherv(const void* send, void* recv, const int64_t* counts, Type t);
void barrier();
[[noreturn]] void abort(int code);
// Heartbeats between ranks: a rank silent for timeout_ms ends the run naming it. False when the MPI lacks
// MPI_THREAD_MULTIPLE (then only mpirun's own handling of a rank that exits remains).
bool start_watchdog(int interval_ms, int timeout_ms);

// Sum of a float32 buffer over ranks with the same bits on every rank: reduce-scatter (each block summed on one
// rank) then all-gather, so no rank sums in a different order from another. `scratch` is grown as needed.
void allreduce_sum_identical(float* buf, int64_t count);

}  // namespace recode::mpi
