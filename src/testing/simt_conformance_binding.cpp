// simtConformance(device, Int32Array in, blockSize, bins, Float32Array fin): runs the SIMT conformance
// kernels on 'emulated' or 'cuda' and returns their raw outputs for the test suite to check.
#include "device/kernels.h"
#include "node/device_arg.h"

namespace recode {
namespace {

Napi::Value simt_conformance(const Napi::CallbackInfo& info) {
  Args a{info, "simtConformance"};
  Device d = parse_device(a, 0);
  if (d == Device::CPU) a.fail(0, "(device) must be 'emulated' or 'cuda'");
  auto in = a.typed<int32_t>(1, "input");
  int block = (int)a.integer(2, "blockSize", 32, 1024);
  int bins = (int)a.integer(3, "bins", 1, 1 << 20);
  auto fin = a.typed<float>(4, "floats");
  int n = (int)in.ElementLength();
  if (n == 0 || fin.ElementLength() != (size_t)n) a.fail(4, "(floats) must have the input's non-zero length");
  Napi::Env env = info.Env();
  unsigned grid = (unsigned)((n + block - 1) / block);
  auto sums = Napi::Int32Array::New(env, grid);
  auto scan = Napi::Int32Array::New(env, n);
  auto ballots = Napi::Uint32Array::New(env, (n + 31) / 32);
  auto hist = Napi::Int32Array::New(env, bins);
  auto fout = Napi::Float32Array::New(env, n);
  auto fn = Kernels(d).simt_conformance;
  char err[512] = {0};
  int rc = fn(in.Data(), n, block, sums.Data(), scan.Data(), ballots.Data(), hist.Data(), bins, fin.Data(), fout.Data(),
              err, sizeof err);
  check_kernel_status(rc, "simt_conformance", err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("blockSums", sums);
  o.Set("scan", scan);
  o.Set("ballots", ballots);
  o.Set("histogram", hist);
  o.Set("reversed", fout);
  return o;
}

}  // namespace

RECODE_EXPORT("simtConformance", simt_conformance);

}  // namespace recode
