// Reading safetensors files: the file is memory-mapped (never copied whole), its JSON header parsed and
// every field validated against the file: header length inside the file, known dtype, shape of
// non-negative integers, data_offsets inside the data section, byte size == dtype size x product(shape),
// no two tensors overlapping. Every error is a recode::Error with code ERR_MODEL naming the file and tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace recode {

enum class DType { BF16, F16, F32 };
const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets within the data section
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps and validates; throws Error(ERR_MODEL)
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const uint8_t* data(const TensorInfo& t) const { return data_ + t.begin; }
  // Converts the tensor to float32 into out[numel] (multi-threaded); returns the index of the first NaN or
  // infinite value, or -1 when every value is finite.
  int64_t to_float(const TensorInfo& t, float* out) const;
  uint64_t file_size() const { return size_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

// Validates a header (the JSON text) against a data section of data_size bytes; `file` names the file in
// errors. Exposed separately so the checks can be exercised without a file.
std::vector<TensorInfo> parse_safetensors_header(const std::string& json, uint64_t data_size, const std::string& file);

}  // namespace recode
