// The CUDA backend: the same transformer as cpu_backend.cpp, run by the kernels of cuda/recode_cuda.h on
// device memory. Device 'cuda' calls librecode_cuda.so on a GPU; device 'emulated' calls the same kernels
// compiled through the SIMT emulation (src/emu/*.cpp), so CI checks this code path without a GPU.
//
// Storage type Elem is float32 (dtype 'f32': the SIMT fp32 kernels, the exact counterpart of the CPU backend) or
// bfloat16 (dtype 'bf16': weights, activations and KV cache in bf16, GEMM and prefill attention on tensor cores,
// fp32 accumulation; logits within bf16 tolerance of the CPU backend's). Biases and RoPE frequencies stay fp32.
// Weights are uploaded once; the KV cache is allocated up front as [layers][slots][Hkv][context][D]
// (per layer, the [B, Hkv, capacity, D] layout attention_decode reads, with slot s at batch index s).
//
// Each decoder layer is cuda_decoder_layer.cpp's, shared with the CUDA trainer; this file supplies its attention
// hook, which writes the step's keys/values to the KV cache and attends over the cached prefix, within what the
// kernels allow:
//   - every sequence starts an empty slot with the same token count (> 1) and the slots are consecutive: one
//     batched causal attention_forward (it needs query length == key length and equal T per batch);
//   - otherwise, walking the sequences: a run of one-token sequences in consecutive slots is one batched
//     kv_cache_write + attention_decode (split along the context when long); a fresh slot runs attention_forward
//     over its tokens; a chunk appended to a non-empty cache (chunked prefill) writes its keys/values to the
//     cache and then runs one decode per token with the context length ending at that token (causal).
// Logits are copied back to the host; sampling happens on the host (recode::sampling via the model binding).
#include <cmath>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "device/kernels.h"
#include "core/numeric.h"
#include "model/cuda_decoder_layer.h"
#include "model/cuda_train_step.h"
#include "device/device_buffer.h"
#include "device/memory_count.h"
#include "model/model.h"

namespace recode::model {
namespace {

#define CALL RECODE_KERNEL_CALL

// A device array of `count` elements of T.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const Kernels* k, size_t count) : buf_(k, count * sizeof(T)), count_(count) {}
  T* get() const { return buf_.template as<T>(); }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  DeviceBuffer buf_;
  size_t count_ = 0;
};

template <class Elem>
struct CudaLinear {
  DeviceArray<Elem> weight;
  DeviceArray<float> bias;  // weight [N, K], bias [N] (empty when absent)
  int N = 0, K = 0;
  size_t bytes() const { return weight.bytes() + bias.bytes(); }
};

template <class Elem>
struct CudaLayer {
  DeviceArray<Elem> input_norm, post_attention_norm, q_norm, k_norm;
  CudaLinear<Elem> q, k, v, o, gate, up, down;
};

template <class Elem>
class CudaBackend : public Backend {
  static constexpr int kDtype = std::is_same<Elem, float>::value ? RECODE_F32 : RECODE_BF16;

 public:
  // ws null: shapes only, every weight allocated and none loaded (the counting device of `recode plan`).
  CudaBackend(Device device, const ModelConfig& cfg, const WeightStore* ws, int slots, int context, bool round_bf16)
      : device_(device), kern_(device), slots_(slots), context_(context) {
    config_ = cfg;
    const int64_t V = cfg.vocab, C = cfg.hidden, H = cfg.heads, Hkv = cfg.kv_heads, D = cfg.head_dim;
    if (D != 16 && D != 32 && D != 64 && D != 128)
      throw Error("ERR_MODEL",
                  "the CUDA model backend needs head_dim 16, 32, 64 or 128 (the attention kernels' sizes); "
                  "this model has " +
                      std::to_string(D));
    auto upload = [&](const auto& host) {
      using E = typename std::decay_t<decltype(host)>::value_type;
      DeviceArray<E> d(&kern_, host.size());
      CALL(copy_to_device, d.get(), host.data(), host.size() * sizeof(E));
      return d;
    };
    auto elements = [](const std::vector<int64_t>& shape) {
      size_t n = 1;
      for (int64_t d : shape) n *= (size_t)d;
      return n;
    };
    MemScope weights_scope(MemCategory::Weights);
    auto vec = [&](const std::string& name, std::vector<int64_t> shape) {  // in the storage type
      if (!ws) return DeviceArray<Elem>(&kern_, elements(shape));
      std::vector<float> w = ws->load(name, shape, round_bf16);
      if constexpr (std::is_same<Elem, float>::value) {
        return upload(w);
      } else {
        std::vector<Elem> b(w.size());
        for (size_t i = 0; i < w.size(); ++i) b[i] = float_to_bf16(w[i]);
        return upload(b);
      }
    };
    auto vec32 = [&](const std::string& name, std::vector<int64_t> shape) {  // biases: fp32
      if (!ws) return DeviceArray<float>(&kern_, elements(shape));
      return upload(ws->load(name, shape, round_bf16));
    };
    auto linear = [&](const std::string& prefix, int64_t N, int64_t K, bool bias) {
      CudaLinear<Elem> l;
      l.N = (int)N;
      l.K = (int)K;
      l.weight = vec(prefix + ".weight", {N, K});
      if (bias) l.bias = vec32(prefix + ".bias", {N});
      return l;
    };
    embed_ = vec("model.embed_tokens.weight", {V, C});
    layers_.resize(cfg.layers);
    for (int l = 0; l < cfg.layers; ++l) load_decoder_layer(layers_[l], cfg, l, vec, linear);
    final_norm_ = vec("model.norm.weight", {C});
    if (!cfg.tie_embeddings) lm_head_ = vec("lm_head.weight", {V, C});  // tied: the lm head reads embed_
    std::vector<double> inv_freq64(D / 2);
    ops::rope_inv_freq_ref(inv_freq64.data(), (int)D, cfg.rope_theta, cfg.rope_scaling);
    inv_freq_ = upload(std::vector<float>(inv_freq64.begin(), inv_freq64.end()));
    dims_ = {(int)C, (int)H, (int)Hkv, (int)D, cfg.intermediate, (float)cfg.eps, cfg.qk_norm, kDtype};
    kv_per_slot_layer_ = (size_t)context * Hkv * D;
    const size_t kv_elems = kv_per_slot_layer_ * cfg.layers * slots;
    MemScope kv_scope(MemCategory::KvCache);
    k_cache_ = DeviceArray<Elem>(&kern_, kv_elems);
    v_cache_ = DeviceArray<Elem>(&kern_, kv_elems);
    // decode scratch for the largest split count any batch size gets (splits shrink as the batch grows)
    size_t scratch = 0;
    for (int b = 1; b <= slots; ++b) {
      int s = recode_decode_num_splits(b, (int)Hkv, context);
      if (s > 1) scratch = std::max(scratch, (size_t)b * H * s * (D + 2));
    }
    MemScope scratch_scope(MemCategory::Scratch);
    decode_scratch_ = DeviceArray<float>(&kern_, std::max<size_t>(scratch, 1));
    lengths_.assign(slots, 0);
  }

  const char* device() const override { return device_name(device_); }
  int slots() const override { return slots_; }
  int context() const override { return context_; }
  int slot_length(int slot) const override { return lengths_.at(slot); }
  void reset_slot(int slot) override {
    std::lock_guard<std::mutex> lk(mu_);
    lengths_.at(slot) = 0;
  }
  size_t weight_bytes() const override {
    size_t b = embed_.bytes() + final_norm_.bytes() + lm_head_.bytes() + inv_freq_.bytes();
    for (const auto& L : layers_)
      b += L.input_norm.bytes() + L.post_attention_norm.bytes() + L.q_norm.bytes() + L.k_norm.bytes() + L.q.bytes() +
           L.k.bytes() + L.v.bytes() + L.o.bytes() + L.gate.bytes() + L.up.bytes() + L.down.bytes();
    return b;
  }
  size_t kv_cache_bytes() const override { return k_cache_.bytes() + v_cache_.bytes(); }

  // The device arrays of every parameter, for the CUDA trainer (cuda_train_step.cpp), which updates them in place.
  CudaParams train_params_device() {
    CudaParams p;
    p.device = device_;
    p.dtype = kDtype;
    p.mu = &mu_;
    p.inv_freq = inv_freq_.get();
    p.embed = embed_.get();
    p.final_norm = final_norm_.get();
    p.lm_head = config_.tie_embeddings ? nullptr : lm_head_.get();
    p.generation_project = &gen_project_;
    p.release_generation = [this] { release_workspace(); };
    p.release_training = &train_release_;
    p.hooks_owner = &hooks_owner_;
    for (CudaLayer<Elem>& L : layers_) {
      CudaLayerParams q;
      q.input_norm = L.input_norm.get();
      q.post_attention_norm = L.post_attention_norm.get();
      q.q_norm = L.q_norm.get();
      q.k_norm = L.k_norm.get();
      q.q_w = L.q.weight.get();
      q.k_w = L.k.weight.get();
      q.v_w = L.v.weight.get();
      q.o_w = L.o.weight.get();
      q.gate_w = L.gate.weight.get();
      q.up_w = L.up.weight.get();
      q.down_w = L.down.weight.get();
      q.q_b = L.q.bias.get();
      q.k_b = L.k.bias.get();
      q.v_b = L.v.bias.get();
      q.o_b = L.o.bias.get();
      q.gate_b = L.gate.bias.get();
      q.up_b = L.up.bias.get();
      q.down_b = L.down.bias.get();
      p.layers.push_back(q);
    }
    return p;
  }

  void forward(const std::vector<StepSeq>& seqs, const int32_t* tokens, bool all_logits, float* logits,
               const CancelFlag& cancel) override {
    std::lock_guard<std::mutex> lk(mu_);
    const ModelConfig& cfg = config_;
    const int C = cfg.hidden, H = cfg.heads, Hkv = cfg.kv_heads, D = cfg.head_dim, V = cfg.vocab;
    const int S = (int)seqs.size();
    const int T = check_step(seqs, tokens, lengths_, context_, V);
    if (train_release_) train_release_();  // the trainer's workspace makes room (an empty step just hands it over)
    if (S == 0) return;

    // host-side index arrays, uploaded in one copy: tokens [T] | positions [T] | context length through each
    // token [T] | first position of each sequence [S]
    std::vector<int32_t> idx((size_t)3 * T + S);
    std::vector<int> t0(S);
    bool all_decode = true, all_fresh = true, consecutive = true;
    for (int i = 0, t = 0; i < S; ++i) {
      const int pos0 = lengths_[seqs[i].slot];
      t0[i] = t;
      idx[(size_t)3 * T + i] = pos0;
      for (int j = 0; j < seqs[i].n; ++j, ++t) {
        idx[t] = tokens[t];
        idx[(size_t)T + t] = pos0 + j;
        idx[(size_t)2 * T + t] = pos0 + j + 1;
      }
      all_decode = all_decode && seqs[i].n == 1;
      all_fresh = all_fresh && pos0 == 0 && seqs[i].n == seqs[0].n;
      consecutive = consecutive && seqs[i].slot == seqs[0].slot + i;
    }
    ensure_workspace(T, S, all_logits ? T : S);
    CALL(copy_to_device, ids_.get(), idx.data(), idx.size() * sizeof(int32_t));
    const int32_t* d_tokens = ids_.get();
    const int32_t* d_pos = ids_.get() + T;
    const int32_t* d_ctx = ids_.get() + 2 * T;
    const int32_t* d_start = ids_.get() + 3 * T;
    const float scale = dims_.attention_scale();
    const size_t q_row = (size_t)H * D, kv_row = (size_t)Hkv * D;

    Elem* x = x_.get();
    CALL(embedding_forward, T, C, V, d_tokens, embed_.get(), x, kDtype, nullptr);
    // the layer's activations in a few reused buffers, the residual stream x updated in place; q_pre and k_pre
    // share attn_ (nothing is kept for a backward)
    cuda_layer::Acts a;
    a.h1 = a.h2 = a.tmp = xn_.get();
    a.q_pre = a.k_pre = a.att = attn_.get();
    a.q = query_.get();
    a.k = key_.get();
    a.v = val_.get();
    a.lse = lse_.get();
    a.x_mid = x;
    a.gate = a.act = gate_.get();
    a.up = up_.get();
    for (int l = 0; l < cfg.layers; ++l) {
      cancel.throw_if_requested();
      Elem* k_layer = k_cache_.get() + (size_t)l * slots_ * kv_per_slot_layer_;
      Elem* v_layer = v_cache_.get() + (size_t)l * slots_ * kv_per_slot_layer_;
      cuda_layer::Hooks hooks;
      // keys and values go to the KV cache, and each query attends over its slot's cached prefix
      hooks.attention = [&](const cuda_layer::Acts&) {
        if (consecutive && all_fresh && !all_decode) {  // equal fresh prompts: one batched causal prefill
          const int n = seqs[0].n;
          Elem* kc = k_layer + (size_t)seqs[0].slot * kv_per_slot_layer_;
          Elem* vc = v_layer + (size_t)seqs[0].slot * kv_per_slot_layer_;
          CALL(kv_cache_write, S, n, Hkv, D, context_, key_.get(), val_.get(), d_start, kc, vc, kDtype, nullptr);
          CALL(attention_forward, S, n, H, Hkv, D, query_.get(), key_.get(), val_.get(), attn_.get(), lse_.get(), scale,
               1, kDtype, nullptr);
          return;
        }
        for (int i = 0; i < S;) {
          const int n = seqs[i].n, pos0 = idx[(size_t)3 * T + i];
          Elem* kc = k_layer + (size_t)seqs[i].slot * kv_per_slot_layer_;
          Elem* vc = v_layer + (size_t)seqs[i].slot * kv_per_slot_layer_;
          const Elem* q = query_.get() + t0[i] * q_row;
          const Elem* k = key_.get() + t0[i] * kv_row;
          const Elem* v = val_.get() + t0[i] * kv_row;
          Elem* o = attn_.get() + t0[i] * q_row;
          if (n == 1) {
            // a run of one-token sequences in consecutive slots: one batched cache write and decode (their
            // tokens are consecutive rows, their slots consecutive batch entries of the cache)
            int j = i + 1;
            while (j < S && seqs[j].n == 1 && seqs[j].slot == seqs[i].slot + (j - i)) ++j;
            const int B = j - i;
            const int splits = recode_decode_num_splits(B, Hkv, context_);
            CALL(kv_cache_write, B, 1, Hkv, D, context_, k, v, d_start + i, kc, vc, kDtype, nullptr);
            CALL(attention_decode, B, H, Hkv, D, context_, q, kc, vc, d_ctx + t0[i], o, scale, splits,
                 splits > 1 ? decode_scratch_.get() : nullptr, kDtype, nullptr);
            i = j;
            continue;
          }
          CALL(kv_cache_write, 1, n, Hkv, D, context_, k, v, d_start + i, kc, vc, kDtype, nullptr);
          if (pos0 == 0) {
            CALL(attention_forward, 1, n, H, Hkv, D, q, k, v, o, lse_.get(), scale, 1, kDtype, nullptr);
          } else {  // chunk appended to a cache: attention_forward needs query length == key length, so decode
            const int splits = recode_decode_num_splits(1, Hkv, context_);  // each token over its own prefix
            for (int r = 0; r < n; ++r)
              CALL(attention_decode, 1, H, Hkv, D, context_, q + r * q_row, kc, vc, d_ctx + t0[i] + r, o + r * q_row,
                   scale, splits, splits > 1 ? decode_scratch_.get() : nullptr, kDtype, nullptr);
          }
          ++i;
        }
      };
      if (gen_project_)  // an adapter trainer's adapted projections
        hooks.project = [&, l](int p, const cuda_layer::Linear& L, const void* in, void* out, int M) {
          return gen_project_(l, p, L, in, out, M);
        };
      cuda_layer::forward(kern_, dims_, layer_weights(layers_[l]), T, d_pos, x, x, a, hooks);
    }
    // final norm and lm head over the rows whose logits are wanted
    const int R = all_logits ? T : S;
    const Elem* rows = x;
    if (!all_logits) {
      for (int i = 0; i < S; ++i)
        CALL(copy_device, xn_.get() + (size_t)i * C, x + (size_t)(t0[i] + seqs[i].n - 1) * C, sizeof(Elem) * C,
             nullptr);
      rows = xn_.get();
    }
    CALL(rmsnorm_forward, R, C, rows, final_norm_.get(), (float)cfg.eps, attn_.get(), nullptr, kDtype, nullptr);
    const Elem* head = cfg.tie_embeddings ? embed_.get() : lm_head_.get();
    CALL(gemm_forward, R, V, C, attn_.get(), head, nullptr, logits_.get(), kDtype, RECODE_F32, 0, nullptr);
    CALL(copy_to_host, logits, logits_.get(), (size_t)R * V * sizeof(float));  // synchronises
    for (const StepSeq& s : seqs) lengths_[s.slot] += s.n;
  }

 private:
  // The device arrays of layer L as the shared layer code reads them.
  cuda_layer::Weights layer_weights(const CudaLayer<Elem>& L) const {
    cuda_layer::Weights w;
    w.input_norm = L.input_norm.get();
    w.post_attention_norm = L.post_attention_norm.get();
    w.q_norm = L.q_norm.get();
    w.k_norm = L.k_norm.get();
    const CudaLinear<Elem>* proj[cuda_layer::kProjectionCount] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
    for (int p = 0; p < cuda_layer::kProjectionCount; ++p)
      w.proj[p] = {proj[p]->weight.get(), proj[p]->bias.get(), proj[p]->N, proj[p]->K};
    w.inv_freq = inv_freq_.get();
    return w;
  }

  // Frees the step buffers (a training forward is about to take the memory); the next step allocates them again.
  void release_workspace() {
    for (DeviceArray<Elem>* a : {&x_, &xn_, &query_, &key_, &val_, &attn_, &gate_, &up_}) *a = DeviceArray<Elem>();
    lse_ = DeviceArray<float>();
    logits_ = DeviceArray<float>();
    ids_ = DeviceArray<int32_t>();
    ws_tokens_ = ws_seqs_ = ws_logit_rows_ = 0;
  }

  // Activation buffers for a step of T tokens of S sequences, logits for R rows (grown, never shrunk). The
  // logits are sized by the rows returned (one per sequence while sampling), not by the tokens: a 512-token
  // prefill chunk of 64 sequences would otherwise hold 20 GB of fp32 logits at a 152k vocabulary.
  void ensure_workspace(int T, int S, int R) {
    MemScope scope(MemCategory::Generation);
    if (R > ws_logit_rows_) {
      logits_ = DeviceArray<float>(&kern_, (size_t)R * config_.vocab);
      ws_logit_rows_ = R;
    }
    if (T <= ws_tokens_ && S <= ws_seqs_) return;
    const ModelConfig& cfg = config_;
    T = std::max(T, ws_tokens_);
    S = std::max(S, ws_seqs_);
    const size_t t = (size_t)T, C = cfg.hidden, H = cfg.heads, Hkv = cfg.kv_heads, D = cfg.head_dim,
                 F = cfg.intermediate;
    x_ = DeviceArray<Elem>(&kern_, t * C);
    xn_ = DeviceArray<Elem>(&kern_, t * C);
    query_ = DeviceArray<Elem>(&kern_, t * H * D);
    key_ = DeviceArray<Elem>(&kern_, t * Hkv * D);
    val_ = DeviceArray<Elem>(&kern_, t * Hkv * D);
    attn_ = DeviceArray<Elem>(&kern_, t * std::max(H * D, C));
    gate_ = DeviceArray<Elem>(&kern_, t * F);
    up_ = DeviceArray<Elem>(&kern_, t * F);
    lse_ = DeviceArray<float>(&kern_, t * H);
    ids_ = DeviceArray<int32_t>(&kern_, 3 * t + S);
    ws_tokens_ = T;
    ws_seqs_ = S;
  }

  Device device_;
  Kernels kern_;
  cuda_layer::Dims dims_;
  int slots_, context_;
  size_t kv_per_slot_layer_ = 0;
  DeviceArray<Elem> embed_, final_norm_, lm_head_;
  DeviceArray<float> inv_freq_;
  std::vector<CudaLayer<Elem>> layers_;
  DeviceArray<Elem> k_cache_, v_cache_;
  DeviceArray<float> decode_scratch_;
  std::vector<int> lengths_;
  int ws_tokens_ = 0, ws_seqs_ = 0, ws_logit_rows_ = 0;
  DeviceArray<Elem> x_, xn_, query_, key_, val_, attn_, gate_, up_;
  DeviceArray<float> lse_, logits_;
  DeviceArray<int32_t> ids_;
  CudaParams::Project gen_project_;
  std::function<void()> train_release_;
  const void* hooks_owner_ = nullptr;
  std::mutex mu_;
};

#undef CALL

}  // namespace

CudaParams cuda_train_params(Backend& b) {
  if (auto* f = dynamic_cast<CudaBackend<float>*>(&b)) return f->train_params_device();
  if (auto* h = dynamic_cast<CudaBackend<bf16>*>(&b)) return h->train_params_device();
  throw Error("ERR_UNSUPPORTED",
              std::string("the CUDA trainer needs a 'cuda' or 'emulated' model, not '") + b.device() + "'");
}

std::unique_ptr<Backend> make_cuda_backend(bool emulated, const ModelConfig& cfg, const WeightStore& weights, int slots,
                                           int context, bool round_bf16) {
  const Device d = emulated ? Device::Emulated : Device::CUDA;
  if (round_bf16) return std::make_unique<CudaBackend<bf16>>(d, cfg, &weights, slots, context, true);
  return std::make_unique<CudaBackend<float>>(d, cfg, &weights, slots, context, false);
}

std::unique_ptr<Backend> make_counting_backend(const ModelConfig& cfg, int slots, int context, bool round_bf16) {
  if (round_bf16) return std::make_unique<CudaBackend<bf16>>(Device::Counting, cfg, nullptr, slots, context, true);
  return std::make_unique<CudaBackend<float>>(Device::Counting, cfg, nullptr, slots, context, false);
}

}  // namespace recode::model
