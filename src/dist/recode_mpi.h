/* The C ABI of librecode_mpi.so, the one piece of recode compiled against an MPI's headers (mpi_shim.c).
 * MPI implementations differ in ABI (Open MPI's handles are pointers, MPICH's are ints), so the addon never
 * includes <mpi.h>: it dlopens this shim, built against whichever MPI CMake found, and calls these functions.
 * Every function returns 0 on success or an MPI error code (recode_mpi_error_string says what it means).
 * dtype: RECODE_MPI_F32 / F64 / I64. Counts are elements; large buffers are sent in chunks by the shim. */
#ifndef RECODE_MPI_H
#define RECODE_MPI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RECODE_MPI_ABI_VERSION 3
enum { RECODE_MPI_F32 = 0, RECODE_MPI_F64 = 1, RECODE_MPI_I64 = 2, RECODE_MPI_BYTE = 3 };

int recode_mpi_abi_version(void);
/* MPI_Get_library_version's text (first line), e.g. "Open MPI v4.1.4, ...". Works before init. */
int recode_mpi_library_version(char* out, size_t len);
/* MPI_Init_thread(MULTIPLE when the MPI has it, for the watchdog; recode's own calls all come from the thread that
 * called init). */
int recode_mpi_init(void);
int recode_mpi_initialized(void);
int recode_mpi_finalize(void);
int recode_mpi_rank(void);
int recode_mpi_size(void);
/* Rank among the processes of this node (MPI_COMM_TYPE_SHARED), and how many there are. */
int recode_mpi_local_rank(void);
int recode_mpi_local_size(void);
int recode_mpi_allreduce_sum(void* buf, int64_t count, int dtype);
int recode_mpi_broadcast(void* buf, int64_t bytes, int root);
/* recv holds size() blocks of `count` elements, rank r's block at r * count. */
int recode_mpi_allgather(const void* send, void* recv, int64_t count, int dtype);
/* send holds size() blocks of `count` elements; recv gets the sum of every rank's block number rank(). */
int recode_mpi_reduce_scatter_sum(const void* send, void* recv, int64_t count, int dtype);
/* Variable blocks (ZeRO shards): counts[r] elements for rank r, laid out one after another. */
int recode_mpi_reduce_scatterv_sum(const void* send, void* recv, const int64_t* counts, int dtype);
int recode_mpi_allgatherv(const void* send, void* recv, const int64_t* counts, int dtype);
int recode_mpi_barrier(void);
void recode_mpi_abort(int code);
void recode_mpi_error_string(int code, char* out, size_t len);
/* A thread that sends every other rank a heartbeat each interval_ms and ends the run (MPI_Abort, after naming the
 * rank on stderr) when one has sent none for timeout_ms: a stopped or hung rank cannot leave the others waiting in
 * a collective. Needs MPI_THREAD_MULTIPLE (returns MPI_ERR_OTHER without it). stop() tells the others this rank
 * finished, so its silence while it finalises is not taken for a hang. */
int recode_mpi_watchdog_start(int interval_ms, int timeout_ms);
void recode_mpi_watchdog_stop(void);

#ifdef __cplusplus
}
#endif

#endif
