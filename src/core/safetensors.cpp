#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/numeric.h"
#include "core/parallel.h"

namespace recode {

const char* dtype_name(DType d) { return d == DType::BF16 ? "BF16" : d == DType::F16 ? "F16" : "F32"; }
size_t dtype_size(DType d) { return d == DType::F32 ? 4 : 2; }

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw Error("ERR_MODEL", file + ": " + what);
}

// A small strict JSON reader, enough for safetensors headers: values become a tree of Json nodes.
struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  std::string text;  // string value, or a number's literal text
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> fields;
};

class JsonReader {
 public:
  JsonReader(const std::string& s, const std::string& file) : s_(s), file_(file) {}
  Json document() {
    Json v = value(0);
    ws();
    if (p_ != s_.size()) err("unexpected text after the JSON value");
    return v;
  }

 private:
  const std::string& s_;
  const std::string& file_;
  size_t p_ = 0;

  [[noreturn]] void err(const std::string& what) {
    fail(file_, "header is not valid JSON (" + what + " at byte " + std::to_string(p_) + ")");
  }
  void ws() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\n' || s_[p_] == '\r' || s_[p_] == '\t')) ++p_;
  }
  bool eat(char c) {
    ws();
    if (p_ < s_.size() && s_[p_] == c) {
      ++p_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) err(std::string("expected '") + c + "'");
  }
  Json value(int depth) {
    if (depth > 64) err("nesting too deep");
    ws();
    if (p_ >= s_.size()) err("unexpected end");
    char c = s_[p_];
    Json v;
    if (c == '{') {
      ++p_;
      v.kind = Json::Object;
      if (eat('}')) return v;
      do {
        ws();
        std::string key = string();
        expect(':');
        v.fields.emplace_back(std::move(key), value(depth + 1));
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++p_;
      v.kind = Json::Array;
      if (eat(']')) return v;
      do v.items.push_back(value(depth + 1));
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Json::String;
      v.text = string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Json::Number;
      size_t b = p_;
      while (p_ < s_.size() && (std::strchr("+-.eE", s_[p_]) || (s_[p_] >= '0' && s_[p_] <= '9'))) ++p_;
      v.text = s_.substr(b, p_ - b);
    } else if (s_.compare(p_, 4, "true") == 0 || s_.compare(p_, 5, "false") == 0) {
      v.kind = Json::Bool;
      v.text = s_[p_] == 't' ? "true" : "false";
      p_ += s_[p_] == 't' ? 4 : 5;
    } else if (s_.compare(p_, 4, "null") == 0) {
      p_ += 4;
    } else {
      err("unexpected character");
    }
    return v;
  }
  // Four hex digits of a \u escape, all required (std::stoul would throw a bare "stoul" on "zzzz" and
  // silently stop early on "12zz").
  unsigned hex4() {
    if (p_ + 4 > s_.size()) err("bad \\u escape (needs 4 hex digits)");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[p_ + k];
      unsigned d = c >= '0' && c <= '9'   ? c - '0'
                   : c >= 'a' && c <= 'f' ? c - 'a' + 10
                   : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                          : 16;
      if (d == 16) err("bad \\u escape (needs 4 hex digits)");
      v = v * 16 + d;
    }
    p_ += 4;
    return v;
  }
  std::string string() {
    if (p_ >= s_.size() || s_[p_] != '"') err("expected a string");
    ++p_;
    std::string out;
    while (true) {
      if (p_ >= s_.size()) err("unterminated string");
      char c = s_[p_++];
      if (c == '"') break;
      if ((unsigned char)c < 0x20) err("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= s_.size()) err("unterminated escape");
      char e = s_[p_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp < 0xE000) err("unpaired low surrogate in \\u escape");
          if (cp >= 0xD800 && cp < 0xDC00) {  // a high surrogate must be followed by \u and a low one
            if (p_ + 2 > s_.size() || s_[p_] != '\\' || s_[p_ + 1] != 'u') err("unpaired high surrogate in \\u escape");
            p_ += 2;
            unsigned lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) err("unpaired high surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          if (cp < 0x80)
            out += (char)cp;
          else if (cp < 0x800)
            out += (char)(0xC0 | (cp >> 6)), out += (char)(0x80 | (cp & 0x3F));
          else if (cp < 0x10000)
            out += (char)(0xE0 | (cp >> 12)), out += (char)(0x80 | ((cp >> 6) & 0x3F)),
                out += (char)(0x80 | (cp & 0x3F));
          else
            out += (char)(0xF0 | (cp >> 18)), out += (char)(0x80 | ((cp >> 12) & 0x3F)),
                out += (char)(0x80 | ((cp >> 6) & 0x3F)), out += (char)(0x80 | (cp & 0x3F));
          break;
        }
        default:
          err("bad escape");
      }
    }
    return out;
  }
};

// A JSON number that must be a non-negative integer below 2^53.
bool as_count(const Json& v, uint64_t& out) {
  if (v.kind != Json::Number || v.text.empty() || v.text.size() > 16) return false;
  for (char c : v.text)
    if (c < '0' || c > '9') return false;
  out = std::stoull(v.text);
  return true;
}

}  // namespace

std::vector<TensorInfo> parse_safetensors_header(const std::string& text, uint64_t data_size, const std::string& file) {
  Json doc = JsonReader(text, file).document();
  if (doc.kind != Json::Object) fail(file, "header must be a JSON object");
  std::vector<TensorInfo> out;
  std::map<std::string, int> seen;
  for (const auto& [name, v] : doc.fields) {
    if (name == "__metadata__") continue;  // free-form string map; not needed
    const std::string where = "tensor '" + name + "'";
    if (seen.count(name)) fail(file, where + " appears twice in the header");
    seen[name] = 1;
    if (v.kind != Json::Object) fail(file, where + ": entry must be an object");
    const Json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    for (const auto& [k, f] : v.fields) {
      if (k == "dtype")
        dtype = &f;
      else if (k == "shape")
        shape = &f;
      else if (k == "data_offsets")
        offsets = &f;
    }
    if (!dtype || dtype->kind != Json::String) fail(file, where + ": missing or non-string 'dtype'");
    if (!shape || shape->kind != Json::Array) fail(file, where + ": missing or non-array 'shape'");
    if (!offsets || offsets->kind != Json::Array || offsets->items.size() != 2)
      fail(file, where + ": 'data_offsets' must be an array [begin, end]");
    TensorInfo t;
    t.name = name;
    if (dtype->text == "BF16")
      t.dtype = DType::BF16;
    else if (dtype->text == "F16")
      t.dtype = DType::F16;
    else if (dtype->text == "F32")
      t.dtype = DType::F32;
    else
      fail(file, where + ": dtype '" + dtype->text + "' is not supported (recode reads BF16, F16 and F32)");
    uint64_t numel = 1;
    for (const Json& d : shape->items) {
      uint64_t n;
      if (!as_count(d, n)) fail(file, where + ": shape entries must be non-negative integers");
      if (n && numel > (1ull << 50) / n) fail(file, where + ": shape is too large");
      numel *= n;
      t.shape.push_back((int64_t)n);
    }
    if (!as_count(offsets->items[0], t.begin) || !as_count(offsets->items[1], t.end))
      fail(file, where + ": data_offsets must be non-negative integers");
    if (t.begin > t.end)
      fail(file, where + ": data_offsets begin " + std::to_string(t.begin) + " > end " + std::to_string(t.end));
    if (t.end > data_size)
      fail(file, where + ": data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                     ") run past the data section (" + std::to_string(data_size) + " bytes; truncated file?)");
    if (t.end - t.begin != numel * dtype_size(t.dtype))
      fail(file, where + ": " + std::to_string(t.end - t.begin) + " bytes but dtype " + dtype->text +
                     " x shape needs " + std::to_string(numel * dtype_size(t.dtype)));
    out.push_back(std::move(t));
  }
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : out) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto a, auto b) { return a->begin < b->begin; });
  const TensorInfo* reach = nullptr;  // the tensor ending furthest so far
  for (const TensorInfo* t : by_offset) {
    if (t->end == t->begin) continue;  // empty tensors occupy no bytes
    if (reach && t->begin < reach->end)
      fail(file, "tensors '" + reach->name + "' and '" + t->name + "' overlap in the data section");
    if (!reach || t->end > reach->end) reach = t;
  }
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open (") + std::strerror(errno) + ")");
  struct stat st;
  if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(path, "not a regular file");
  }
  size_ = (uint64_t)st.st_size;
  try {
    if (size_ < 8) fail(path, "file is " + std::to_string(size_) + " bytes, too short for a safetensors header");
    void* m = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (m == MAP_FAILED) fail(path, std::string("cannot memory-map (") + std::strerror(errno) + ")");
    map_ = (uint8_t*)m;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_[i];
    if (header_len > size_ - 8)
      fail(path, "header length " + std::to_string(header_len) + " exceeds the file size " + std::to_string(size_) +
                     " (truncated or not a safetensors file)");
    if (header_len > (100ull << 20))
      fail(path, "header length " + std::to_string(header_len) + " is implausibly large");
    data_ = map_ + 8 + header_len;
    tensors_ = parse_safetensors_header(std::string((const char*)map_ + 8, header_len), size_ - 8 - header_len, path);
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  } catch (...) {
    if (map_) munmap(map_, size_);
    ::close(fd_);
    map_ = nullptr;
    fd_ = -1;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

int64_t SafetensorsFile::to_float(const TensorInfo& t, float* out) const {
  const uint8_t* src = data(t);
  int64_t n = t.numel();
  DType dt = t.dtype;
  // The finiteness check rides on the conversion pass (the values are in registers anyway), so a NaN or
  // infinite weight fails at load, naming the tensor, instead of surfacing later as a sampling error.
  std::atomic<int64_t> first_bad{-1};
  parallel_for(n, 1 << 16, [&](int64_t i0, int64_t i1) {
    if (dt == DType::F32) {
      std::memcpy(out + i0, src + i0 * 4, (size_t)(i1 - i0) * 4);
    } else if (dt == DType::BF16) {
      for (int64_t i = i0; i < i1; ++i) {
        bf16 v;
        std::memcpy(&v.bits, src + i * 2, 2);
        out[i] = bf16_to_float(v);
      }
    } else {
      for (int64_t i = i0; i < i1; ++i) {
        fp16 v;
        std::memcpy(&v.bits, src + i * 2, 2);
        out[i] = fp16_to_float(v);
      }
    }
    // All exponent bits set = NaN or +-inf. An integer OR-reduction, which the compiler vectorises (a float
    // reduction it may not reorder).
    uint32_t any = 0;
    for (int64_t i = i0; i < i1; ++i) {
      uint32_t bits;
      std::memcpy(&bits, out + i, 4);
      any |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (any) {
      int64_t i = i0;
      while (std::isfinite(out[i])) ++i;
      int64_t cur = first_bad.load();
      while ((cur < 0 || i < cur) && !first_bad.compare_exchange_weak(cur, i)) {
      }
    }
  });
  return first_bad.load();
}

}  // namespace recode
