// Edit distance on a chosen backend (editdist.h): the CPU path, or the CUDA kernel (cuda/editdist.cu) on a
// GPU or through the SIMT emulation.
#include "device/kernels.h"
#include "editdist/editdist.h"

namespace recode::editdist {

void distance_batch_on(Device device, const uint32_t* chars, const int64_t* offsets, int64_t pairs, int32_t* out,
                       const CancelFlag& cancel) {
  if (device == Device::CPU) {
    distance_batch(chars, offsets, pairs, out, cancel);
    return;
  }
  auto fn = Kernels(device).edit_distance;
  // About 2^31 cells per slice on a GPU; the emulation is ~1000x slower, so it slices finer.
  const int64_t budget = device == Device::CUDA ? (int64_t{1} << 31) : (int64_t{1} << 22);
  int64_t begin = 0;
  while (begin < pairs) {
    cancel.throw_if_requested();
    int64_t end = begin, cells = 0;
    while (end < pairs && (end == begin || cells < budget)) {
      cells += (offsets[2 * end + 1] - offsets[2 * end]) * (offsets[2 * end + 2] - offsets[2 * end + 1]) + 1;
      ++end;
    }
    char err[512] = {0};
    int rc = fn(chars, offsets + 2 * begin, end - begin, out + begin, err, sizeof err);
    check_kernel_status(rc, "edit_distance", err);
    begin = end;
  }
}

}  // namespace recode::editdist
