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

#include "core/cancel.h"
#include "core/error.h"

namespace recode {

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

// The fields of an options object at argument i (long argument lists are passed this way), checked like Args
// (code ERR_INVALID_ARG; the message names `options.<field>`). Absent means undefined or null.
struct Options {
  const Args& args;
  size_t i;
  Napi::Object object;
  Options(const Args& a, size_t index) : args(a), i(index), object(a.object(index, "options")) {}
  [[noreturn]] void fail(const char* field, const std::string& what) const;
  Napi::Value get(const char* field) const { return object.Get(field); }
  bool has(const char* field) const;
  double number(const char* field) const;
  int64_t integer(const char* field, int64_t lo, int64_t hi) const;
  template <class T>
  Napi::TypedArrayOf<T> typed(const char* field) const;
};

// True when the typed array's buffer was detached (transferred to a worker or by structuredClone).
bool is_detached(const Napi::TypedArray& a);

// Base for a Promise-returning operation: Execute() runs on a libuv worker thread and may throw
// recode::Error; Result() builds the resolved value on the main thread.
//
// A job never touches JavaScript-owned memory from its worker thread. The caller may transfer an ArrayBuffer
// (postMessage, structuredClone with `transfer`) while the job runs, which detaches it and hands its memory to
// another owner that may free it; a reference keeps the object alive, not its memory. So arrays the caller
// passes go through input() (a native copy taken on the main thread) or output() (native memory copied into
// the array when the job succeeds, if the array is still attached). Arrays the binding creates itself and
// never shows to JavaScript before Result() may be written in place. The cancel flag lives in a
// SharedArrayBuffer, which cannot be detached.
class AsyncJob : public Napi::AsyncWorker {
 public:
  explicit AsyncJob(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  // Queues the job (libuv owns it from then on and deletes it when it settles) and returns its promise.
  // Bindings build jobs in a unique_ptr, so a failed argument check on the way frees them.
  static Napi::Value queue(std::unique_ptr<AsyncJob> job);
  void keep(Napi::Value v);
  // Optional Int32Array cancel flag at argument i; it must be backed by a SharedArrayBuffer.
  void set_cancel(const Args& a, size_t i);
  CancelFlag cancel;

  // A copy of the array's elements, owned by the job.
  template <class T>
  const T* input(const Napi::TypedArrayOf<T>& a) {
    return static_cast<const T*>(copy_in(a));
  }
  // Memory the job writes in place of the caller's array `a` (`name` for errors, in the calling function's
  // words); with `load` it starts with the array's values (for updates in place). Copied into `a` on success;
  // if `a` was detached or resized meanwhile, the Promise rejects with ERR_INVALID_ARG and no array changes.
  template <class T>
  T* output(const Napi::TypedArrayOf<T>& a, const char* fn, std::string name, bool load = false) {
    return static_cast<T*>(write_back(a, fn, std::move(name), load));
  }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

 private:
  struct WriteBack {
    Napi::Reference<Napi::Value> array;
    uint8_t* data;
    size_t bytes;
    std::string what;  // "fn: (name)"
  };
  const void* copy_in(const Napi::TypedArray& a);
  void* write_back(const Napi::TypedArray& a, const char* fn, std::string name, bool load);
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::Reference<Napi::Value>> kept_;
  std::vector<std::unique_ptr<uint8_t[]>> copies_;
  std::vector<WriteBack> write_backs_;
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
