/* How every CUDA entry point is declared. Each family header (recode_cuda.h, recode_adapters.h, recode_editdist.h,
 * recode_sampling.h, recode_logprob.h, recode_rl.h, recode_conformance.h) lists its entry points once in an
 * X-macro, RECODE_<FAMILY>_OPS(X) with X(name, (params)), and expands it with RECODE_ABI_DECLARE, which declares
 *   recode_cuda_<name>  defined in librecode_cuda.so by nvcc (cuda/<family>.cu),
 *   recode_emu_<name>   defined in the addon by the same source through the SIMT emulation (src/emu/<family>.cpp).
 * The defining .cu file includes its family header, so a definition whose parameters drift from the declaration
 * is a "conflicting declaration of C function" error at compile time (with C linkage it would otherwise link and
 * misbehave at run time). src/device/kernels.h builds the one kernel table from the same lists.
 */
#ifndef RECODE_ABI_H
#define RECODE_ABI_H

#include <stddef.h>
#include <stdint.h>

/* librecode_cuda.so is built with hidden visibility; only the entry points are exported. */
#if defined(__CUDACC__)
#define RECODE_ABI_EXPORT __attribute__((visibility("default")))
#else
#define RECODE_ABI_EXPORT
#endif

#define RECODE_ABI_DECLARE(name, params)           \
  RECODE_ABI_EXPORT int recode_cuda_##name params; \
  int recode_emu_##name params;

#endif /* RECODE_ABI_H */
