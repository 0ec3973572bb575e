// JavaScript entry points for batched edit distance (lib/editdist.ts wraps them):
//   editDistanceBatch(device, a: string[], b: string[], out: Int32Array, cancelFlag?) -> Promise<Int32Array>
//   editDistanceBatchSync(device, a, b, out) -> Int32Array                      (small batches)
//   editDistanceEncoded(device, chars: Uint32Array, offsets: Int32Array, out, cancelFlag?) -> Promise<Int32Array>
//       pre-encoded code points; pair i is chars[offsets[2i], offsets[2i+1]) vs [offsets[2i+1], offsets[2i+2])
//   editDistanceReference(a: string[], b: string[], out) -> Int32Array          (the plain DP, for tests)
// The main thread only copies the strings' UTF-16 units (and the arrays: see AsyncJob); decoding to code
// points and the distances (editdist::distance_batch_on) run on a libuv worker for the Promise variants.
#include <cstring>

#include "device/kernels.h"
#include "node/device_arg.h"
#include "editdist/editdist.h"
#include "node/napi_util.h"

namespace recode {
namespace {

// Strings of a and b, interleaved (a0, b0, a1, b1, ...) as UTF-16 units with 2n+1 unit offsets.
struct Utf16Batch {
  std::vector<uint16_t> units;  // the first `used` are the strings' units
  size_t used = 0;
  std::vector<int64_t> offsets;
  int64_t pairs = 0;
};

void append_string(const Args& args, size_t arg, const char* name, int64_t index, Napi::Value v, Utf16Batch& batch) {
  if (!v.IsString())
    args.fail(arg, std::string("(") + name + ") element " + std::to_string(index) + " must be a string");
  napi_env env = args.env();
  // One call when the string fits the spare room (napi writes a terminating zero, so a string that fills
  // the room exactly may have been cut: then ask for its length and copy again).
  size_t at = batch.used;
  if (batch.units.size() - at < 4096) batch.units.resize(std::max<size_t>(2 * batch.units.size(), at + 65536));
  size_t room = batch.units.size() - at, copied = 0;
  if (napi_get_value_string_utf16(env, v, reinterpret_cast<char16_t*>(batch.units.data() + at), room, &copied) !=
      napi_ok)
    args.fail(arg, std::string("(") + name + ") element " + std::to_string(index) + " could not be read");
  if (copied + 1 >= room) {
    size_t length = 0;
    napi_get_value_string_utf16(env, v, nullptr, 0, &length);
    batch.units.resize(std::max(2 * batch.units.size(), at + length + 1));
    napi_get_value_string_utf16(env, v, reinterpret_cast<char16_t*>(batch.units.data() + at), length + 1, &copied);
  }
  batch.used = at + copied;
  batch.offsets.push_back((int64_t)batch.used);
}

Utf16Batch read_pairs(const Args& args, size_t ia, size_t ib) {
  Napi::Array a = args.array(ia, "a");
  Napi::Array b = args.array(ib, "b");
  if (a.Length() != b.Length())
    args.fail(ib, "(b) must have as many strings as a (" + std::to_string(a.Length()) + "), got " +
                      std::to_string(b.Length()));
  Utf16Batch batch;
  batch.pairs = a.Length();
  batch.offsets.reserve(2 * batch.pairs + 1);
  batch.offsets.push_back(0);
  for (uint32_t i = 0; i < a.Length(); ++i) {
    append_string(args, ia, "a", i, a.Get(i), batch);
    append_string(args, ib, "b", i, b.Get(i), batch);
  }
  return batch;
}

Napi::Int32Array output(const Args& args, size_t i, int64_t pairs) {
  Napi::Int32Array out = args.typed<int32_t>(i, "out");
  if ((int64_t)out.ElementLength() != pairs)
    args.fail(i, "(out) must have one element per pair (" + std::to_string(pairs) + "), got " +
                     std::to_string(out.ElementLength()));
  return out;
}

editdist::CodePointBatch decode(const Utf16Batch& in) {
  return editdist::decode_utf16_batch(in.units.data(), in.offsets.data(), 2 * in.pairs);
}

class EditDistanceJob : public AsyncJob {
 public:
  EditDistanceJob(Napi::Env env, const char* fn, Device device, Utf16Batch strings, Napi::Int32Array out)
      : AsyncJob(env), device_(device), strings_(std::move(strings)), out_(output(out, fn, "out")) {
    out_value_ = Napi::Persistent(out);
  }
  // Pre-encoded input: chars is copied (input()), offsets were converted already.
  EditDistanceJob(Napi::Env env, const char* fn, Device device, Napi::Uint32Array chars, std::vector<int64_t> offsets,
                  Napi::Int32Array out)
      : AsyncJob(env),
        device_(device),
        encoded_chars_(input(chars)),
        encoded_offsets_(std::move(offsets)),
        out_(output(out, fn, "out")) {
    out_value_ = Napi::Persistent(out);
  }

 protected:
  void Run() override {
    if (encoded_chars_) {
      int64_t pairs = ((int64_t)encoded_offsets_.size() - 1) / 2;
      editdist::distance_batch_on(device_, encoded_chars_, encoded_offsets_.data(), pairs, out_, cancel);
      return;
    }
    cancel.throw_if_requested();
    editdist::CodePointBatch cp = decode(strings_);
    editdist::distance_batch_on(device_, cp.chars.data(), cp.offsets.data(), strings_.pairs, out_, cancel);
  }
  Napi::Value Result(Napi::Env env) override { return out_value_.Value(); }

 private:
  Device device_;
  Utf16Batch strings_;
  const uint32_t* encoded_chars_ = nullptr;
  std::vector<int64_t> encoded_offsets_;
  int32_t* out_;
  Napi::Reference<Napi::Int32Array> out_value_;
};

Napi::Value edit_distance_batch(const Napi::CallbackInfo& info) {
  Args args{info, "editDistanceBatch"};
  Device device = parse_device(args, 0);
  Utf16Batch strings = read_pairs(args, 1, 2);
  Napi::Int32Array out = output(args, 3, strings.pairs);
  auto job = std::make_unique<EditDistanceJob>(info.Env(), args.fn, device, std::move(strings), out);
  job->set_cancel(args, 4);
  return AsyncJob::queue(std::move(job));
}

Napi::Value edit_distance_batch_sync(const Napi::CallbackInfo& info) {
  Args args{info, "editDistanceBatchSync"};
  Device device = parse_device(args, 0);
  Utf16Batch strings = read_pairs(args, 1, 2);
  Napi::Int32Array out = output(args, 3, strings.pairs);
  editdist::CodePointBatch cp = decode(strings);
  editdist::distance_batch_on(device, cp.chars.data(), cp.offsets.data(), strings.pairs, out.Data(), CancelFlag{});
  return out;
}

Napi::Value edit_distance_encoded(const Napi::CallbackInfo& info) {
  Args args{info, "editDistanceEncoded"};
  Device device = parse_device(args, 0);
  Napi::Uint32Array chars = args.typed<uint32_t>(1, "chars");
  Napi::Int32Array offsets = args.typed<int32_t>(2, "offsets");
  size_t count = offsets.ElementLength();
  if (count % 2 != 1) args.fail(2, "(offsets) must hold 2n+1 positions for n pairs, got " + std::to_string(count));
  int64_t pairs = (int64_t)(count - 1) / 2;
  Napi::Int32Array out = output(args, 3, pairs);
  std::vector<int64_t> positions(count);
  for (size_t i = 0; i < count; ++i) {
    int64_t v = offsets.Data()[i];
    if (v < 0 || v > (int64_t)chars.ElementLength() || (i > 0 && v < positions[i - 1]))
      args.fail(2, "(offsets) must ascend within [0, " + std::to_string(chars.ElementLength()) + "]; position " +
                       std::to_string(i) + " is " + std::to_string(v));
    positions[i] = v;
  }
  auto job = std::make_unique<EditDistanceJob>(info.Env(), args.fn, device, chars, std::move(positions), out);
  job->set_cancel(args, 4);
  return AsyncJob::queue(std::move(job));
}

Napi::Value edit_distance_reference(const Napi::CallbackInfo& info) {
  Args args{info, "editDistanceReference"};
  Utf16Batch strings = read_pairs(args, 0, 1);
  Napi::Int32Array out = output(args, 2, strings.pairs);
  editdist::CodePointBatch cp = decode(strings);
  editdist::distance_batch(cp.chars.data(), cp.offsets.data(), strings.pairs, out.Data(), CancelFlag{}, true);
  return out;
}

// editDistanceWithin(a, b, k: number[], out): the banded block kernel alone, for tests of its bound.
Napi::Value edit_distance_within(const Napi::CallbackInfo& info) {
  Args args{info, "editDistanceWithin"};
  Utf16Batch strings = read_pairs(args, 0, 1);
  Napi::Int32Array bands = args.typed<int32_t>(2, "k");
  if ((int64_t)bands.ElementLength() != strings.pairs) args.fail(2, "(k) must have one band per pair");
  Napi::Int32Array out = output(args, 3, strings.pairs);
  editdist::CodePointBatch cp = decode(strings);
  const int32_t* k = bands.Data();
  int32_t* d = out.Data();
  for (int64_t i = 0; i < strings.pairs; ++i) {
    const int64_t* o = cp.offsets.data() + 2 * i;
    d[i] = (int32_t)editdist::distance_within(cp.chars.data() + o[0], o[1] - o[0], cp.chars.data() + o[1], o[2] - o[1],
                                              std::max<int32_t>(0, k[i]));
  }
  return out;
}

}  // namespace

RECODE_EXPORT("editDistanceWithin", edit_distance_within);
RECODE_EXPORT("editDistanceBatch", edit_distance_batch);
RECODE_EXPORT("editDistanceBatchSync", edit_distance_batch_sync);
RECODE_EXPORT("editDistanceEncoded", edit_distance_encoded);
RECODE_EXPORT("editDistanceReference", edit_distance_reference);

}  // namespace recode
