// cuda/adapters.cu compiled as host C++ through the SIMT emulation.
#define RECODE_SIMT_EMULATION 1
#include "adapters.cu"
