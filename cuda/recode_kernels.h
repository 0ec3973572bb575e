/* Every CUDA entry point with an emulated twin, one list: the family headers' X-macros concatenated. The kernel
 * table (src/device/kernels.h) is generated from it, so a new entry point needs one line in its family header. */
#ifndef RECODE_KERNELS_H
#define RECODE_KERNELS_H

#include "recode_adapters.h"
#include "recode_conformance.h"
#include "recode_cuda.h"
#include "recode_editdist.h"
#include "recode_logprob.h"
#include "recode_rl.h"
#include "recode_sampling.h"

#define RECODE_KERNEL_OPS(X) \
  RECODE_CUDA_OPS(X)         \
  RECODE_ADAPTER_OPS(X)      \
  RECODE_EDITDIST_OPS(X)     \
  RECODE_SAMPLING_OPS(X)     \
  RECODE_LOGPROB_OPS(X)      \
  RECODE_RL_OPS(X)           \
  RECODE_CONFORMANCE_OPS(X)

#endif /* RECODE_KERNELS_H */
