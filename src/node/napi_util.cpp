#include "node/napi_util.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

namespace recode {

Napi::Error make_js_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = (code == "ERR_INVALID_ARG" || code == "ERR_OUT_OF_RANGE")
                      ? Napi::Error(env, Napi::TypeError::New(env, message).Value())
                      : Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

void throw_js(Napi::Env env, const std::string& code, const std::string& message) {
  throw make_js_error(env, code, message);
}

std::string number_text(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  if (d == 0) return "0";
  // The shortest digits that read back as d, laid out by JavaScript's Number::toString rules.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(d), std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // "D.DDDDe+XX"
  size_t e_at = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e_at; ++i)
    if (sci[i] != '.') digits += sci[i];
  int k = (int)digits.size();
  int n = std::stoi(sci.substr(e_at + 1)) + 1;  // the decimal point sits after n digits
  std::string out = d < 0 ? "-" : "";
  if (k <= n && n <= 21)
    out += digits + std::string(n - k, '0');
  else if (0 < n && n <= 21)
    out += digits.substr(0, n) + "." + digits.substr(n);
  else if (-6 < n && n <= 0)
    out += "0." + std::string(-n, '0') + digits;
  else
    out += digits.substr(0, 1) + (k > 1 ? "." + digits.substr(1) : "") + "e" + (n - 1 >= 0 ? "+" : "-") +
           std::to_string(std::abs(n - 1));
  return out;
}

void Args::fail(size_t i, const std::string& what) const {
  throw Error("ERR_INVALID_ARG", std::string(fn) + ": argument " + std::to_string(i) + " " + what);
}

Napi::Value Args::at(size_t i) const {
  if (i >= info.Length()) fail(i, "is missing");
  return info[i];
}

double Args::number(size_t i, const char* name) const {
  Napi::Value v = at(i);
  if (!v.IsNumber()) fail(i, std::string("(") + name + ") must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

namespace {
// Checked on the double, before any conversion: 1e12 must not reach an int and wrap. "" when d is fine.
std::string integer_problem(double d, int64_t lo, int64_t hi) {
  if (std::isfinite(d) && d == std::floor(d) && d >= (double)lo && d <= (double)hi) return "";
  return "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + number_text(d);
}
}  // namespace

int64_t Args::integer(size_t i, const char* name, int64_t lo, int64_t hi) const {
  double d = number(i, name);
  std::string problem = integer_problem(d, lo, hi);
  if (!problem.empty()) fail(i, std::string("(") + name + ") " + problem);
  return (int64_t)d;
}

bool Args::boolean(size_t i, const char* name) const {
  Napi::Value v = at(i);
  if (!v.IsBoolean()) fail(i, std::string("(") + name + ") must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string Args::string(size_t i, const char* name) const {
  Napi::Value v = at(i);
  if (!v.IsString()) fail(i, std::string("(") + name + ") must be a string");
  return v.As<Napi::String>().Utf8Value();
}

Napi::Array Args::array(size_t i, const char* name) const {
  Napi::Value v = at(i);
  if (!v.IsArray()) fail(i, std::string("(") + name + ") must be an array");
  return v.As<Napi::Array>();
}

Napi::Object Args::object(size_t i, const char* name) const {
  Napi::Value v = at(i);
  if (!v.IsObject()) fail(i, std::string("(") + name + ") must be an object");
  return v.As<Napi::Object>();
}

Napi::Function Args::function(size_t i, const char* name) const {
  Napi::Value v = at(i);
  if (!v.IsFunction()) fail(i, std::string("(") + name + ") must be a function");
  return v.As<Napi::Function>();
}

template <class T>
static constexpr napi_typedarray_type typed_array_kind();
template <>
constexpr napi_typedarray_type typed_array_kind<float>() {
  return napi_float32_array;
}
template <>
constexpr napi_typedarray_type typed_array_kind<double>() {
  return napi_float64_array;
}
template <>
constexpr napi_typedarray_type typed_array_kind<int32_t>() {
  return napi_int32_array;
}
template <>
constexpr napi_typedarray_type typed_array_kind<uint32_t>() {
  return napi_uint32_array;
}
template <>
constexpr napi_typedarray_type typed_array_kind<uint16_t>() {
  return napi_uint16_array;
}
template <>
constexpr napi_typedarray_type typed_array_kind<uint8_t>() {
  return napi_uint8_array;
}
template <>
constexpr napi_typedarray_type typed_array_kind<int8_t>() {
  return napi_int8_array;
}
template <>
constexpr napi_typedarray_type typed_array_kind<int64_t>() {
  return napi_bigint64_array;
}

// Checks that v is a typed array of T on an attached buffer; `fail` receives what is wrong.
template <class T, class Fail>
static Napi::TypedArrayOf<T> checked_typed(Napi::Value v, Fail&& fail) {
  static const char* names[] = {"Int8Array",    "Uint8Array",    "Uint8ClampedArray", "Int16Array",
                                "Uint16Array",  "Int32Array",    "Uint32Array",       "Float32Array",
                                "Float64Array", "BigInt64Array", "BigUint64Array"};
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != typed_array_kind<T>())
    fail(std::string("must be a ") + names[typed_array_kind<T>()]);
  if (is_detached(v.As<Napi::TypedArray>())) fail("is detached (its ArrayBuffer was transferred)");
  return v.As<Napi::TypedArrayOf<T>>();
}

template <class T>
Napi::TypedArrayOf<T> Args::typed(size_t i, const char* name) const {
  return checked_typed<T>(at(i), [&](const std::string& what) { fail(i, std::string("(") + name + ") " + what); });
}

void Options::fail(const char* field, const std::string& what) const {
  args.fail(i, std::string("(options.") + field + ") " + what);
}

bool Options::has(const char* field) const {
  Napi::Value v = get(field);
  return !v.IsUndefined() && !v.IsNull();
}

double Options::number(const char* field) const {
  Napi::Value v = get(field);
  if (!v.IsNumber()) fail(field, "must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int64_t Options::integer(const char* field, int64_t lo, int64_t hi) const {
  double d = number(field);
  std::string problem = integer_problem(d, lo, hi);
  if (!problem.empty()) fail(field, problem);
  return (int64_t)d;
}

template <class T>
Napi::TypedArrayOf<T> Options::typed(const char* field) const {
  return checked_typed<T>(get(field), [&](const std::string& what) { fail(field, what); });
}

template Napi::TypedArrayOf<float> Args::typed<float>(size_t, const char*) const;
template Napi::TypedArrayOf<double> Args::typed<double>(size_t, const char*) const;
template Napi::TypedArrayOf<int32_t> Args::typed<int32_t>(size_t, const char*) const;
template Napi::TypedArrayOf<uint32_t> Args::typed<uint32_t>(size_t, const char*) const;
template Napi::TypedArrayOf<uint16_t> Args::typed<uint16_t>(size_t, const char*) const;
template Napi::TypedArrayOf<uint8_t> Args::typed<uint8_t>(size_t, const char*) const;
template Napi::TypedArrayOf<int8_t> Args::typed<int8_t>(size_t, const char*) const;
template Napi::TypedArrayOf<int64_t> Args::typed<int64_t>(size_t, const char*) const;
template Napi::TypedArrayOf<float> Options::typed<float>(const char*) const;
template Napi::TypedArrayOf<double> Options::typed<double>(const char*) const;
template Napi::TypedArrayOf<int32_t> Options::typed<int32_t>(const char*) const;
template Napi::TypedArrayOf<uint32_t> Options::typed<uint32_t>(const char*) const;
template Napi::TypedArrayOf<uint16_t> Options::typed<uint16_t>(const char*) const;
template Napi::TypedArrayOf<uint8_t> Options::typed<uint8_t>(const char*) const;
template Napi::TypedArrayOf<int8_t> Options::typed<int8_t>(const char*) const;
template Napi::TypedArrayOf<int64_t> Options::typed<int64_t>(const char*) const;

bool is_detached(const Napi::TypedArray& a) {
  napi_value buffer = nullptr;
  bool detached = false;
  napi_get_typedarray_info(a.Env(), a, nullptr, nullptr, nullptr, &buffer, nullptr);
  napi_is_detached_arraybuffer(a.Env(), buffer, &detached);  // false for a SharedArrayBuffer
  return detached;
}

// The array's bytes as seen now (null data for an empty or detached array).
static std::pair<uint8_t*, size_t> bytes_of(const Napi::TypedArray& a) {
  void* data = nullptr;
  size_t length = 0;
  napi_get_typedarray_info(a.Env(), a, nullptr, &length, &data, nullptr, nullptr);
  return {static_cast<uint8_t*>(data), length * a.ElementSize()};
}

void AsyncJob::keep(Napi::Value v) { kept_.push_back(Napi::Persistent(v)); }

Napi::Value AsyncJob::queue(std::unique_ptr<AsyncJob> job) {
  Napi::Promise p = job->promise();
  job.release()->Queue();
  return p;
}

void AsyncJob::set_cancel(const Args& a, size_t i) {
  if (!a.has(i)) return;
  Napi::Int32Array flag = a.typed<int32_t>(i, "cancel flag");
  if (flag.ElementLength() < 1) a.fail(i, "(cancel flag) must have one element");
  // The worker polls this word while the job runs: a plain ArrayBuffer could be detached and freed under it.
  napi_value buffer = nullptr;
  bool plain = true;
  napi_get_typedarray_info(a.env(), flag, nullptr, nullptr, nullptr, &buffer, nullptr);
  napi_is_arraybuffer(a.env(), buffer, &plain);
  if (plain) a.fail(i, "(cancel flag) must be an Int32Array on a SharedArrayBuffer");
  keep(flag);
  cancel.flag = flag.Data();
}

const void* AsyncJob::copy_in(const Napi::TypedArray& a) {
  auto [data, bytes] = bytes_of(a);
  copies_.emplace_back(new uint8_t[bytes ? bytes : 1]);
  if (bytes) std::memcpy(copies_.back().get(), data, bytes);
  return copies_.back().get();
}

void* AsyncJob::write_back(const Napi::TypedArray& a, const char* fn, std::string name, bool load) {
  auto [data, bytes] = bytes_of(a);
  copies_.emplace_back(load ? new uint8_t[bytes ? bytes : 1] : new uint8_t[bytes ? bytes : 1]());
  uint8_t* mine = copies_.back().get();
  if (load && bytes) std::memcpy(mine, data, bytes);
  write_backs_.push_back({Napi::Persistent(Napi::Value(a)), mine, bytes, std::string(fn) + ": (" + name + ")"});
  return mine;
}

void AsyncJob::Execute() {
  try {
    Run();
  } catch (const Error& e) {
    error_code_ = e.code;
    error_message_ = e.what();
    SetError(e.what());
  } catch (const std::bad_alloc&) {
    error_code_ = "ERR_OUT_OF_MEMORY";
    error_message_ = "out of memory";
    SetError(error_message_);
  } catch (const std::exception& e) {
    error_code_ = "ERR_NATIVE";
    error_message_ = e.what();
    SetError(e.what());
  }
}

void AsyncJob::OnOK() {
  Napi::Env env = Env();
  // Every written array is checked before any is copied into, so a failure leaves them all unchanged.
  for (const WriteBack& w : write_backs_) {
    Napi::TypedArray a = w.array.Value().As<Napi::TypedArray>();
    if (is_detached(a) || bytes_of(a).second != w.bytes) {
      deferred_.Reject(make_js_error(env, "ERR_INVALID_ARG",
                                     w.what + " was detached (its ArrayBuffer transferred) "
                                              "or resized while the operation ran; it holds no result")
                           .Value());
      return;
    }
  }
  for (const WriteBack& w : write_backs_)
    if (w.bytes) std::memcpy(bytes_of(w.array.Value().As<Napi::TypedArray>()).first, w.data, w.bytes);
  Napi::Value result;
  try {
    result = Result(env);
  } catch (const Error& e) {
    deferred_.Reject(make_js_error(env, e.code, e.what()).Value());
    return;
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
    return;
  }
  deferred_.Resolve(result);
}

void AsyncJob::OnError(const Napi::Error&) {
  deferred_.Reject(make_js_error(Env(), error_code_.empty() ? "ERR_NATIVE" : error_code_, error_message_).Value());
}

std::vector<ExportEntry>& export_registry() {
  static std::vector<ExportEntry> entries;
  return entries;
}

Napi::Value guard(const Napi::CallbackInfo& info, ExportFn fn) {
  try {
    return fn(info);
  } catch (const Error& e) {
    throw make_js_error(info.Env(), e.code, e.what());
  } catch (const std::bad_alloc&) {
    throw make_js_error(info.Env(), "ERR_OUT_OF_MEMORY", "out of memory");
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw make_js_error(info.Env(), "ERR_NATIVE", e.what());
  }
}

}  // namespace recode
