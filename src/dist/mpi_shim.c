/* librecode_mpi.so: recode's collectives over the system MPI, behind the tiny C ABI of recode_mpi.h. Built by
 * CMake only when find_package(MPI) succeeds; the addon opens it with dlopen, so a machine without MPI installs
 * and trains in one process. Errors are returned, not fatal (MPI_ERRORS_RETURN on the world communicator). */
#include "recode_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VIS __attribute__((visibility("default")))

static MPI_Comm g_local = MPI_COMM_NULL;
static int g_thread_level = MPI_THREAD_SINGLE;
/* MPI counts are int: big buffers go in pieces of at most this many elements. */
static const int64_t kChunk = (int64_t)1 << 30;

static MPI_Datatype type_of(int dtype, int64_t* elem) {
  switch (dtype) {
    case RECODE_MPI_F32: *elem = 4; return MPI_FLOAT;
    case RECODE_MPI_F64: *elem = 8; return MPI_DOUBLE;
    case RECODE_MPI_I64: *elem = 8; return MPI_INT64_T;
    default: *elem = 1; return MPI_BYTE;
  }
}

VIS int recode_mpi_abi_version(void) { return RECODE_MPI_ABI_VERSION; }

VIS int recode_mpi_library_version(char* out, size_t len) {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  int rc = MPI_Get_library_version(v, &n);
  if (rc != MPI_SUCCESS) return rc;
  v[n < (int)sizeof v ? n : (int)sizeof v - 1] = 0;
  char* nl = strchr(v, '\n');
  if (nl) *nl = 0;
  snprintf(out, len, "%s", v);
  return 0;
}

VIS int recode_mpi_initialized(void) {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag;
}

VIS int recode_mpi_init(void) {
  if (recode_mpi_initialized()) return 0;
  int provided = 0;
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return rc;
  g_thread_level = provided;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world);
  rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world, MPI_INFO_NULL, &g_local);
  if (rc == MPI_SUCCESS) MPI_Comm_set_errhandler(g_local, MPI_ERRORS_RETURN);
  return rc;
}

VIS int recode_mpi_finalize(void) {
  recode_mpi_watchdog_stop();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || !recode_mpi_initialized()) return 0;
  if (g_local != MPI_COMM_NULL) MPI_Comm_free(&g_local);
  return MPI_Finalize();
}

VIS int recode_mpi_rank(void) { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
VIS int recode_mpi_size(void) { int s = 1; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }
VIS int recode_mpi_local_rank(void) { int r = 0; if (g_local != MPI_COMM_NULL) MPI_Comm_rank(g_local, &r); return r; }
VIS int recode_mpi_local_size(void) { int s = 1; if (g_local != MPI_COMM_NULL) MPI_Comm_size(g_local, &s); return s; }

VIS int recode_mpi_allreduce_sum(void* buf, int64_t count, int dtype) {
  int64_t elem;
  MPI_Datatype t = type_of(dtype, &elem);
  for (int64_t at = 0; at < count; at += kChunk) {
    int n = (int)(count - at < kChunk ? count - at : kChunk);
    int rc = MPI_Allreduce(MPI_IN_PLACE, (char*)buf + at * elem, n, t, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
  }
  return 0;
}

VIS int recode_mpi_broadcast(void* buf, int64_t bytes, int root) {
  for (int64_t at = 0; at < bytes; at += kChunk) {
    int n = (int)(bytes - at < kChunk ? bytes - at : kChunk);
    int rc = MPI_Bcast((char*)buf + at, n, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
  }
  return 0;
}

VIS int recode_mpi_allgather(const void* send, void* recv, int64_t count, int dtype) {
  int64_t elem;
  MPI_Datatype t = type_of(dtype, &elem);
  if (count > INT_MAX) return MPI_ERR_COUNT;
  return MPI_Allgather(send, (int)count, t, recv, (int)count, t, MPI_COMM_WORLD);
}

VIS int recode_mpi_reduce_scatter_sum(const void* send, void* recv, int64_t count, int dtype) {
  int64_t elem;
  MPI_Datatype t = type_of(dtype, &elem);
  if (count > INT_MAX) return MPI_ERR_COUNT;
  return MPI_Reduce_scatter_block(send, recv, (int)count, t, MPI_SUM, MPI_COMM_WORLD);
}

/* int counts and displacements for MPI's v-collectives; MPI_ERR_COUNT when a block or the total is over INT_MAX. */
static int int_counts(const int64_t* counts, int* out, int* displs) {
  int size = recode_mpi_size();
  int64_t at = 0;
  for (int r = 0; r < size; ++r) {
    if (counts[r] > INT_MAX || at > INT_MAX) return MPI_ERR_COUNT;
    out[r] = (int)counts[r];
    displs[r] = (int)at;
    at += counts[r];
  }
  return 0;
}

VIS int recode_mpi_reduce_scatterv_sum(const void* send, void* recv, const int64_t* counts, int dtype) {
  int64_t elem;
  MPI_Datatype t = type_of(dtype, &elem);
  int size = recode_mpi_size();
  int* c = malloc(sizeof(int) * 2 * (size_t)size);
  int rc = int_counts(counts, c, c + size);
  if (rc == 0) rc = MPI_Reduce_scatter(send, recv, c, t, MPI_SUM, MPI_COMM_WORLD);
  free(c);
  return rc;
}

VIS int recode_mpi_allgatherv(const void* send, void* recv, const int64_t* counts, int dtype) {
  int64_t elem;
  MPI_Datatype t = type_of(dtype, &elem);
  int size = recode_mpi_size();
  int* c = malloc(sizeof(int) * 2 * (size_t)size);
  int rc = int_counts(counts, c, c + size);
  if (rc == 0) rc = MPI_Allgatherv(send, c[recode_mpi_rank()], t, recv, c, c + size, t, MPI_COMM_WORLD);
  free(c);
  return rc;
}

VIS int recode_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }

VIS void recode_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

VIS void recode_mpi_error_string(int code, char* out, size_t len) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(code, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", code);
  snprintf(out, len, "%s", s);
}

/* ---- watchdog ------------------------------------------------------------------------------------------- */

enum { kBeat = 1, kBye = 2 };
static MPI_Comm g_hb = MPI_COMM_NULL;  /* its own communicator: heartbeats never match recode's messages */
static pthread_t g_watch;
static volatile int g_watch_running = 0, g_watch_stop = 0;
static int g_interval_ms = 2000, g_timeout_ms = 30000;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void send_all(int size, int me, int tag) {
  static int payload = 0;
  for (int k = 0; k < size; ++k) {
    if (k == me) continue;
    MPI_Request req;
    if (MPI_Isend(&payload, 1, MPI_INT, k, tag, g_hb, &req) == MPI_SUCCESS) MPI_Request_free(&req);
  }
}

static void* watch(void* arg) {
  (void)arg;
  int me = 0, size = 1;
  MPI_Comm_rank(g_hb, &me);
  MPI_Comm_size(g_hb, &size);
  double* seen = calloc((size_t)size, sizeof(double));
  char* done = calloc((size_t)size, 1);
  const double start = now_ms();
  for (int k = 0; k < size; ++k) seen[k] = start;
  double last_beat = 0;
  while (!g_watch_stop) {
    const double t = now_ms();
    if (t - last_beat >= g_interval_ms) { send_all(size, me, kBeat); last_beat = t; }
    for (;;) {
      int flag = 0, payload = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, g_hb, &flag, &st) != MPI_SUCCESS || !flag) break;
      MPI_Recv(&payload, 1, MPI_INT, st.MPI_SOURCE, st.MPI_TAG, g_hb, MPI_STATUS_IGNORE);
      seen[st.MPI_SOURCE] = now_ms();
      if (st.MPI_TAG == kBye) done[st.MPI_SOURCE] = 1;
    }
    for (int k = 0; k < size; ++k) {
      if (k == me || done[k] || now_ms() - seen[k] < g_timeout_ms) continue;
      fprintf(stderr, "recode: rank %d has not answered rank %d for %.0f s (stopped or hung); ending the run\n", k, me,
              (now_ms() - seen[k]) / 1e3);
      fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    usleep(50 * 1000);
  }
  send_all(size, me, kBye);
  free(seen);
  free(done);
  return NULL;
}

VIS int recode_mpi_watchdog_start(int interval_ms, int timeout_ms) {
  if (g_watch_running) return 0;
  if (g_thread_level < MPI_THREAD_MULTIPLE) return MPI_ERR_OTHER;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &g_hb);
  if (rc != MPI_SUCCESS) return rc;
  g_interval_ms = interval_ms > 0 ? interval_ms : 2000;
  g_timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
  g_watch_stop = 0;
  if (pthread_create(&g_watch, NULL, watch, NULL) != 0) return MPI_ERR_OTHER;
  g_watch_running = 1;
  return 0;
}

VIS void recode_mpi_watchdog_stop(void) {
  if (!g_watch_running) return;
  g_watch_stop = 1;
  pthread_join(g_watch, NULL);
  g_watch_running = 0;
}
