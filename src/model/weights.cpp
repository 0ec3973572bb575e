// WeightStore: maps every shard, indexes tensor names across shards (a name in two shards is an error), and
// converts on request with shape checks whose errors name the tensor and its file.
#include <cmath>
#include <unordered_map>

#include "model/model.h"
#include "core/numeric.h"
#include "core/safetensors.h"

namespace recode::model {

struct WeightStore::Impl {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::unordered_map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>> index;
};

static std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

WeightStore::WeightStore(const std::vector<std::string>& files) : impl_(new Impl), paths_(files) {
  if (files.empty()) throw Error("ERR_MODEL", "no safetensors files given");
  for (const auto& f : files) {
    impl_->files.push_back(std::make_unique<SafetensorsFile>(f));
    const SafetensorsFile* sf = impl_->files.back().get();
    for (const TensorInfo& t : sf->tensors()) {
      auto [it, fresh] = impl_->index.emplace(t.name, std::make_pair(sf, &t));
      if (!fresh)
        throw Error("ERR_MODEL", "tensor '" + t.name + "' is in both " + it->second.first->path() + " and " + f);
    }
  }
}

WeightStore::~WeightStore() = default;

bool WeightStore::has(const std::string& name) const { return impl_->index.count(name) != 0; }

std::vector<float> WeightStore::load(const std::string& name, const std::vector<int64_t>& shape,
                                     bool round_bf16) const {
  auto it = impl_->index.find(name);
  if (it == impl_->index.end()) {
    std::string where =
        paths_.size() == 1 ? paths_[0] : std::to_string(paths_.size()) + " shards (" + paths_[0] + ", ...)";
    throw Error("ERR_MODEL", "tensor '" + name + "' is missing from " + where);
  }
  const auto [file, t] = it->second;
  if (t->shape != shape)
    throw Error("ERR_MODEL", file->path() + ": tensor '" + name + "' has shape " + shape_str(t->shape) +
                                 " but config.json implies " + shape_str(shape));
  std::vector<float> out((size_t)t->numel());
  if (int64_t bad = file->to_float(*t, out.data()); bad >= 0)
    throw Error("ERR_MODEL", file->path() + ": tensor '" + name + "' holds " +
                                 (std::isnan(out[bad]) ? "NaN" : "an infinite value") + " at index " +
                                 std::to_string(bad) + " (a corrupt or diverged checkpoint)");
  if (round_bf16 && t->dtype != DType::BF16)
    for (float& v : out) v = bf16_to_float(float_to_bf16(v));
  return out;
}

}  // namespace recode::model
