// cudaAdapterKernel(device, op, options): runs one kernel of cuda/adapters.cu on 'emulated' or 'cuda' with fp32
// tensors, for the kernel tests (test/cuda-adapters.test.mjs). Copies the Float32Array inputs to device memory,
// calls the entry point of cuda/recode_adapters.h, copies the outputs back. Ops and options:
//   dropout      { x, seed, offset, p }                           -> Float32Array out
//   dropoutAdd   { dx, adx, seed, offset, p }                     -> Float32Array dx
//   combine      { M, N, y0, baseDrop?, lora, magnitude?, norm?, scaling, bias? } -> { y, pre }
//   gradScale    { M, N, dy, magnitude?, norm?, scaling }         -> { gs, e }
//   magnitudeGrad{ M, N, dy, pre, norm, dm }                      -> Float32Array dm (dm + the sums)
//   weightNorm   { N, K, W, ba, scaling }                         -> Float32Array norm
//   merge        { N, K, W, ba, scaling, magnitude? }             -> Float32Array merged
// seed and offset are non-negative integers below 2^53. Output buffers are filled with NaN before the kernel runs.
// Bad options throw ERR_INVALID_ARG naming the field.
#include <cmath>
#include <string>
#include <vector>

#include "device/kernels.h"
#include "node/device_arg.h"
#include "recode_adapters.h"
#include "recode_cuda.h"

namespace recode {
namespace {

class AdapterCall {
 public:
  AdapterCall(const Napi::CallbackInfo& info) : args_{info, "cudaAdapterKernel"}, env_(info.Env()) {
    device_ = parse_device(args_, 0);
    if (device_ == Device::CPU) args_.fail(0, "(device) must be 'emulated' or 'cuda'");
    op_ = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    opt_ = args_.object(2, "options");
    kern_ = Kernels(device_);
  }
  ~AdapterCall() {
    char err[256];
    for (void* p : owned_) kern_.device_free(p, err, sizeof err);
  }
  AdapterCall(const AdapterCall&) = delete;
  AdapterCall& operator=(const AdapterCall&) = delete;

  const std::string& op() const { return op_; }
  Device device() const { return device_; }
  const Kernels& kernels() const { return kern_; }
  Napi::Env env() const { return env_; }
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error("ERR_INVALID_ARG", "cudaAdapterKernel: (options." + field + ") " + what);
  }
  bool has(const char* name) const {
    return opt_.Has(name) && !opt_.Get(name).IsUndefined() && !opt_.Get(name).IsNull();
  }
  double number(const char* name, double lo, double hi) const {
    const double d = has(name) && opt_.Get(name).IsNumber() ? opt_.Get(name).As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= lo && d <= hi))
      fail(name, "must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return d;
  }
  int64_t integer(const char* name, double lo, double hi) const {
    const double d = number(name, lo, hi);
    if (d != std::floor(d)) fail(name, "must be an integer");
    return (int64_t)d;
  }
  // A Float32Array option of exactly n elements copied to a new device buffer (nullptr when optional and absent).
  float* input(const char* name, size_t n, bool optional = false) {
    if (!has(name)) {
      if (optional) return nullptr;
      fail(name, "is missing");
    }
    Napi::Value v = opt_.Get(name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      fail(name, "must be a Float32Array");
    auto a = v.As<Napi::Float32Array>();
    if (a.ElementLength() != n)
      fail(name, "must hold " + std::to_string(n) + " values, got " + std::to_string(a.ElementLength()));
    float* d = device_buffer(n);
    char err[512] = {0};
    check_kernel_status(kern_.copy_to_device(d, a.Data(), n * sizeof(float), err, sizeof err), "copy_to_device", err);
    return d;
  }
  float* device_buffer(size_t n) {
    void* p = nullptr;
    char err[512] = {0};
    check_kernel_status(kern_.device_alloc(std::max<size_t>(n, 1) * sizeof(float), &p, err, sizeof err), "device_alloc",
                        err);
    owned_.push_back(p);
    // poisoned: an output element the kernel does not write comes back NaN
    const std::vector<float> nan(std::max<size_t>(n, 1), std::nanf(""));
    check_kernel_status(kern_.copy_to_device(p, nan.data(), nan.size() * sizeof(float), err, sizeof err),
                        "copy_to_device", err);
    return static_cast<float*>(p);
  }
  Napi::Float32Array output(const float* d, size_t n) {
    auto a = Napi::Float32Array::New(env_, n);
    char err[512] = {0};
    check_kernel_status(kern_.copy_to_host(a.Data(), d, n * sizeof(float), err, sizeof err), "copy_to_host", err);
    return a;
  }

 private:
  Args args_;
  Napi::Env env_;
  Device device_ = Device::Emulated;
  std::string op_;
  Napi::Object opt_;
  Kernels kern_;
  std::vector<void*> owned_;
};

#define RUN(name, ...)                                                                  \
  do {                                                                                  \
    char err_[512] = {0};                                                               \
    check_kernel_status(c.kernels().name(__VA_ARGS__, err_, sizeof err_), #name, err_); \
  } while (0)

constexpr double kMaxDim = 1 << 24;
constexpr double kMaxCounter = 9007199254740992.0;  // 2^53

Napi::Value cuda_adapter_kernel(const Napi::CallbackInfo& info) {
  AdapterCall c(info);
  const std::string& op = c.op();
  if (op == "dropout" || op == "dropoutAdd") {
    const uint64_t seed = (uint64_t)c.integer("seed", 0, kMaxCounter),
                   offset = (uint64_t)c.integer("offset", 0, kMaxCounter);
    const float p = (float)c.number("p", 0, 0.999999);
    const char* first = op == "dropout" ? "x" : "dx";
    if (!c.has(first) || !info[2].As<Napi::Object>().Get(first).IsTypedArray()) c.fail(first, "must be a Float32Array");
    const size_t n = info[2].As<Napi::Object>().Get(first).As<Napi::TypedArray>().ElementLength();
    if (op == "dropout") {
      float* x = c.input("x", n);
      float* out = c.device_buffer(n);
      RUN(adapter_dropout, n, x, out, seed, offset, p, RECODE_F32, nullptr);
      return c.output(out, n);
    }
    float* dx = c.input("dx", n);
    float* adx = c.input("adx", n);
    RUN(adapter_dropout_add, n, dx, adx, seed, offset, p, RECODE_F32, nullptr);
    return c.output(dx, n);
  }
  if (op == "combine" || op == "gradScale" || op == "magnitudeGrad") {
    const int M = (int)c.integer("M", 1, kMaxDim), N = (int)c.integer("N", 1, kMaxDim);
    const size_t mn = (size_t)M * N;
    if (op == "magnitudeGrad") {
      float* dy = c.input("dy", mn);
      float* pre = c.input("pre", mn);
      float* norm = c.input("norm", N);
      float* dm = c.input("dm", N);
      RUN(dora_magnitude_grad, M, N, dy, pre, norm, dm, RECODE_F32, nullptr);
      return c.output(dm, N);
    }
    const float scaling = (float)c.number("scaling", -1e30, 1e30);
    float* magnitude = c.input("magnitude", N, true);
    float* norm = c.input("norm", N, magnitude == nullptr);
    if (op == "gradScale") {
      float* dy = c.input("dy", mn);
      float* gs = c.device_buffer(mn);
      float* e = magnitude ? c.device_buffer(mn) : nullptr;
      RUN(adapter_grad_scale, M, N, dy, magnitude, norm, scaling, gs, e, RECODE_F32, nullptr);
      Napi::Object o = Napi::Object::New(c.env());
      o.Set("gs", c.output(gs, mn));
      if (e) o.Set("e", c.output(e, mn));
      return o;
    }
    float* y0 = c.input("y0", mn);
    float* base_drop = c.input("baseDrop", mn, true);
    float* lora = c.input("lora", mn);
    float* bias = c.input("bias", N, true);
    float* y = c.device_buffer(mn);
    float* pre = magnitude ? c.device_buffer(mn) : nullptr;
    RUN(adapter_forward_combine, M, N, y0, base_drop, lora, magnitude, norm, scaling, bias, y, pre, RECODE_F32,
        nullptr);
    Napi::Object o = Napi::Object::New(c.env());
    o.Set("y", c.output(y, mn));
    if (pre) o.Set("pre", c.output(pre, mn));
    return o;
  }
  if (op == "weightNorm" || op == "merge") {
    const int N = (int)c.integer("N", 1, kMaxDim), K = (int)c.integer("K", 1, kMaxDim);
    const size_t nk = (size_t)N * K;
    const float scaling = (float)c.number("scaling", -1e30, 1e30);
    float* W = c.input("W", nk);
    float* ba = c.input("ba", nk);
    if (op == "weightNorm") {
      float* norm = c.device_buffer(N);
      RUN(dora_weight_norm, N, K, W, ba, scaling, norm, RECODE_F32, nullptr);
      return c.output(norm, N);
    }
    float* magnitude = c.input("magnitude", N, true);
    float* out = c.device_buffer(nk);
    RUN(adapter_merge, N, K, W, ba, scaling, magnitude, out, RECODE_F32, RECODE_F32, nullptr);
    return c.output(out, nk);
  }
  throw Error("ERR_INVALID_ARG",
              "cudaAdapterKernel: (op) must be one of dropout, dropoutAdd, combine, gradScale, "
              "magnitudeGrad, weightNorm, merge; got '" +
                  op + "'");
}

#undef RUN

}  // namespace

RECODE_EXPORT("cudaAdapterKernel", cuda_adapter_kernel);

}  // namespace recode
