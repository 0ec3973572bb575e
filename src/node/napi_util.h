// The boundary between JavaScript and native code: argument checks that throw JavaScript errors with a
// stable `code`, the registry through which each binding file adds its functions to the addon, and the
// base class for work that runs off the event loop.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <memory>
#include <string>
#include <vector>

namespace recode {

// A failure inside native work, carried to JavaScript as an Error whose `code` is `code`.
struct Error : std::runtime_error {
  std::string code;
  Error(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
};

[[noreturn]] void throw_js(Napi::Env env, const std::string& code, const std::string& message);

// A number as JavaScript prints it (shortest round-trip form: 1e+12, 0.1, -3, NaN, Infinity), so an error
// shows the value the caller passed rather than std::to_string's fixed six decimals or a wrapped integer.
std::string number_text(double d);
Napi::Error make_js_error(Napi::Env env, const std::string& code, const std::string& message);

// Argument access: each names the function and the argument in its error (code ERR_INVALID_ARG).
struct Args {
  const Napi::CallbackInfo& info;
  const char* fn;
  Napi::Env env() const { return info.Env(); }
  [[noreturn]] void fail(size_t i, const std::string& what) const;
  Napi::Value at(size_t i) const;
  bool has(size_t i) const { return i < info.Length() && !info[i].IsUndefined() && !info[i].IsNull(); }
  double number(size_t i, const char* name) const;
  int64_t integer(size_t i, const char* name, int64_t lo, int64_t hi) const;
  bool boolean(size_t i, const char* name) const;
  std::string string(size_t i, const char* name) const;
  Napi::Array array(size_t i, const char* name) const;
  Napi::Object object(size_t i, const char* name) const;
  Napi::Function function(size_t i, const char* name) const;
  template <class T>
  Napi::TypedArrayOf<T> typed(size_t i, const char* name) const;
};

// Cancellation: JavaScript passes an Int32Array(1); AbortSignal listeners store 1 into it. Native loops poll.
struct CancelFlag {
  const int32_t* flag = nullptr;
  bool requested() const { return flag && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0; }
  void throw_if_requested() const {
    if (requested()) throw Error("ABORT_ERR", "the operation was aborted");
  }
};

// Base for a Promise-returning operation: Execute() runs on a libuv worker thread and may throw
// recode::Error; Result() builds the resolved value on the main thread. Keeps the JS values it was given
// alive (their memory is read from the worker) through `keep`.
class AsyncJob : public Napi::AsyncWorker {
 public:
  explicit AsyncJob(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  // Queues the job (libuv owns it from then on and deletes it when it settles) and returns its promise.
  // Bindings build jobs in a unique_ptr, so a failed argument check on the way frees them.
  static Napi::Value queue(std::unique_ptr<AsyncJob> job);
  void keep(Napi::Value v);
  void set_cancel(const Args& a, size_t i);  // optional Int32Array cancel flag at argument i
  CancelFlag cancel;

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

 private:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> kept_;
  std::string error_code_;
  std::string error_message_;
};

// Registry: binding files add their exports with RECODE_EXPORT; addon.cpp installs them all.
using ExportFn = Napi::Value (*)(const Napi::CallbackInfo&);
struct ExportEntry {
  const char* name;
  ExportFn fn;
};
std::vector<ExportEntry>& export_registry();
struct ExportRegistrar {
  ExportRegistrar(const char* name, ExportFn fn) { export_registry().push_back({name, fn}); }
};
#define RECODE_EXPORT_CONCAT2(a, b) a##b
#define RECODE_EXPORT_CONCAT(a, b) RECODE_EXPORT_CONCAT2(a, b)
#define RECODE_EXPORT(name, fn) \
  static ::recode::ExportRegistrar RECODE_EXPORT_CONCAT(recode_export_, __LINE__)(name, fn)

// Wraps a binding so that recode::Error and std::exception become JavaScript errors with a code.
Napi::Value guard(const Napi::CallbackInfo& info, ExportFn fn);

}  // namespace recode
