/* C ABI of the conformance kernels (cuda/simt_conformance.cu, cuda/wmma_conformance.cu): they exercise the CUDA
 * features the other kernels rely on, so a GPU run and the SIMT emulation can be compared feature by feature.
 * Declared as cuda/recode_abi.h describes; host pointers. Not used by the model. */
#ifndef RECODE_CONFORMANCE_H
#define RECODE_CONFORMANCE_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECODE_CONFORMANCE_OPS(X)                                                                                      \
  /* block sums, scans, ballots and a shared-memory histogram of `in`; a 2-D block reversal of fin into fout      */   \
  X(simt_conformance, (const int* in, int n, int block, int* block_sums, int* scan, unsigned* ballots, int* histogram, \
                       int bins, const float* fin, float* fout, char* err, size_t err_len))                            \
  /* a, b: 256 bf16 each; c: 256 floats; out: 16 x 256 floats (one 16x16 tile per layout variant)                 */   \
  X(wmma_conformance,                                                                                                  \
    (const void* a, const void* b, const float* c, float* out, float alpha, char* err, size_t err_len))

RECODE_CONFORMANCE_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_CONFORMANCE_H */
