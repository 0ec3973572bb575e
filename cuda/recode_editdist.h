/* C ABI of the edit-distance kernel (cuda/editdist.cu); declared as cuda/recode_abi.h describes. Host pointers:
 * the entry point copies to and from the device itself. */
#ifndef RECODE_EDITDIST_H
#define RECODE_EDITDIST_H

#include "recode_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RECODE_EDITDIST_OPS(X)                                                                                     \
  /* chars: the code points from offsets[0] to offsets[2 * pairs]; offsets: 2 * pairs + 1 ascending positions  */  \
  /* (offsets[0] need not be 0: callers may pass a slice of a larger batch); out: pairs unit-cost distances     */ \
  X(edit_distance,                                                                                                 \
    (const uint32_t* chars, const int64_t* offsets, int64_t pairs, int32_t* out, char* err, size_t err_len))

RECODE_EDITDIST_OPS(RECODE_ABI_DECLARE)

#ifdef __cplusplus
}
#endif

#endif /* RECODE_EDITDIST_H */
