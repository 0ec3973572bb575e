// The CPU backend: weights converted at load and pre-packed into GEMM panels, as float32 (dtype 'f32': the
// micro-kernel streams floats, conversion paid once) or as bfloat16 (dtype 'bf16': half the memory and half
// the bytes streamed per decode step, which is bandwidth-bound; widened to float32 in registers, so the
// arithmetic stays float32); a slotted KV cache allocated up front; ops::decoder_layer_forward per layer.
#include <cstring>
#include <mutex>

#include "model/model.h"
#include "core/numeric.h"
#include "core/parallel.h"

namespace recode::model {
namespace {

struct LinearStore {
  ops::PackedWeight packed;
  std::vector<float> bias;
  std::vector<float> master;  // plain [N, K] float32, kept only once training asked for it
  // The packed panels back to [N, K] (panels are [ceil(N/16)][K][16]).
  void unpack() {
    const int N = packed.N, K = packed.K;
    master.resize((size_t)N * K);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) {
        size_t i = ((size_t)(n / ops::kPanel) * K + k) * ops::kPanel + n % ops::kPanel;
        master[(size_t)n * K + k] = packed.is_bf16() ? bf16_to_float(bf16{packed.panels_bf16[i]}) : packed.panels[i];
      }
  }
  void repack() { packed = ops::pack_weight(master.data(), packed.N, packed.K, packed.is_bf16()); }
  ops::Linear view() const {
    ops::Linear l;
    l.packed = &packed;
    l.bias = bias.empty() ? nullptr : bias.data();
    l.N = packed.N;
    l.K = packed.K;
    return l;
  }
  size_t bytes() const { return packed.bytes() + bias.size() * sizeof(float); }
};

struct LayerStore {
  std::vector<float> input_norm, post_attention_norm, q_norm, k_norm;
  LinearStore q, k, v, o, gate, up, down;
  ops::LayerWeights view() const {
    ops::LayerWeights w;
    w.input_norm = input_norm.data();
    w.post_attention_norm = post_attention_norm.data();
    w.q_norm = q_norm.empty() ? nullptr : q_norm.data();
    w.k_norm = k_norm.empty() ? nullptr : k_norm.data();
    w.q = q.view();
    w.k = k.view();
    w.v = v.view();
    w.o = o.view();
    w.gate = gate.view();
    w.up = up.view();
    w.down = down.view();
    return w;
  }
};

class CpuBackend : public Backend {
 public:
  CpuBackend(const ModelConfig& cfg, const WeightStore& ws, int slots, int context, bool round_bf16)
      : slots_(slots), context_(context) {
    config_ = cfg;
    const int64_t V = cfg.vocab, C = cfg.hidden, H = cfg.heads, Hkv = cfg.kv_heads, D = cfg.head_dim,
                  F = cfg.intermediate;
    dims_.C = (int)C;
    dims_.H = (int)H;
    dims_.Hkv = (int)Hkv;
    dims_.D = (int)D;
    dims_.F = (int)F;
    dims_.eps = (float)cfg.eps;
    dims_.qk_norm = cfg.qk_norm;
    auto vec = [&](const std::string& name, std::vector<int64_t> shape) { return ws.load(name, shape, round_bf16); };
    auto linear = [&](const std::string& prefix, int64_t N, int64_t K, bool bias) {
      LinearStore s;
      std::vector<float> w = vec(prefix + ".weight", {N, K});
      s.packed = ops::pack_weight(w.data(), (int)N, (int)K, round_bf16);
      if (bias) s.bias = vec(prefix + ".bias", {N});
      return s;
    };
    embed_ = vec("model.embed_tokens.weight", {V, C});
    layers_.resize(cfg.layers);
    for (int l = 0; l < cfg.layers; ++l) load_decoder_layer(layers_[l], cfg, l, vec, linear);
    final_norm_ = vec("model.norm.weight", {C});
    if (cfg.tie_embeddings) {
      lm_head_ = ops::pack_weight(embed_.data(), (int)V, (int)C, round_bf16);
    } else {
      std::vector<float> w = vec("lm_head.weight", {V, C});
      lm_head_ = ops::pack_weight(w.data(), (int)V, (int)C, round_bf16);
    }
    inv_freq_.resize(D / 2);
    ops::rope_inv_freq_ref(inv_freq_.data(), (int)D, cfg.rope_theta, cfg.rope_scaling);
    kv_per_slot_layer_ = (size_t)context * Hkv * D;
    k_cache_.assign(kv_per_slot_layer_ * cfg.layers * slots, 0.0f);
    v_cache_.assign(kv_per_slot_layer_ * cfg.layers * slots, 0.0f);
    lengths_.assign(slots, 0);
  }

  const char* device() const override { return "cpu"; }
  int slots() const override { return slots_; }
  int context() const override { return context_; }
  int slot_length(int slot) const override { return lengths_.at(slot); }
  void reset_slot(int slot) override {
    std::lock_guard<std::mutex> lk(mu_);
    lengths_.at(slot) = 0;
  }
  size_t weight_bytes() const override {
    size_t b = (embed_.size() + final_norm_.size()) * sizeof(float) + lm_head_.bytes();
    for (const auto& L : layers_)
      b += (L.input_norm.size() + L.post_attention_norm.size() + L.q_norm.size() + L.k_norm.size()) * sizeof(float) +
           L.q.bytes() + L.k.bytes() + L.v.bytes() + L.o.bytes() + L.gate.bytes() + L.up.bytes() + L.down.bytes();
    return b;
  }
  size_t kv_cache_bytes() const override { return (k_cache_.size() + v_cache_.size()) * sizeof(float); }

  void forward(const std::vector<StepSeq>& seqs, const int32_t* tokens, bool all_logits, float* logits,
               const CancelFlag& cancel) override {
    std::lock_guard<std::mutex> lk(mu_);
    const ModelConfig& cfg = config_;
    const int C = cfg.hidden;
    const int T = check_step(seqs, tokens, lengths_, context_, cfg.vocab);
    std::vector<float> x((size_t)T * C);
    std::vector<int32_t> pos(T);
    ops::embedding_forward(x.data(), tokens, embed_.data(), T, C);
    std::vector<ops::AttnSeq> attn(seqs.size());
    int t0 = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      attn[i].t0 = t0;
      attn[i].t = seqs[i].n;
      attn[i].pos0 = lengths_[seqs[i].slot];
      for (int j = 0; j < seqs[i].n; ++j) pos[t0 + j] = attn[i].pos0 + j;
      t0 += seqs[i].n;
    }
    acts_.resize(T, dims_, false);
    for (int l = 0; l < cfg.layers; ++l) {
      cancel.throw_if_requested();
      for (size_t i = 0; i < seqs.size(); ++i) {
        size_t off = ((size_t)seqs[i].slot * cfg.layers + l) * kv_per_slot_layer_;
        attn[i].k_cache = k_cache_.data() + off;
        attn[i].v_cache = v_cache_.data() + off;
      }
      ops::decoder_layer_forward(x.data(), layers_[l].view(), dims_, pos.data(), T, attn, acts_, inv_freq_.data());
    }
    // final norm and lm head over the rows whose logits are wanted
    int R = all_logits ? T : (int)seqs.size();
    std::vector<float> rows((size_t)R * C), normed((size_t)R * C);
    if (all_logits) {
      rows.swap(x);
    } else {
      for (size_t i = 0; i < seqs.size(); ++i)
        std::memcpy(rows.data() + i * C, x.data() + (size_t)(attn[i].t0 + attn[i].t - 1) * C, sizeof(float) * C);
    }
    ops::rmsnorm_forward(normed.data(), nullptr, rows.data(), final_norm_.data(), R, C, dims_.eps);
    ops::linear_forward_packed(logits, normed.data(), lm_head_, nullptr, R);
    for (const StepSeq& s : seqs) lengths_[s.slot] += s.n;
  }

  TrainParams* train_params() override {
    if (!train_) {
      train_ = std::make_unique<TrainParams>();
      TrainParams& p = *train_;
      p.dims = dims_;
      p.inv_freq = inv_freq_.data();
      p.embed = &embed_;
      p.final_norm = &final_norm_;
      if (!config_.tie_embeddings) {
        LinearStore head;
        head.packed = lm_head_;
        head.unpack();
        lm_head_master_.swap(head.master);
        p.lm_head = &lm_head_master_;
      }
      for (LayerStore& L : layers_) {
        for (LinearStore* s : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) s->unpack();
        TrainLayerParams t;
        t.input_norm = &L.input_norm;
        t.post_attention_norm = &L.post_attention_norm;
        t.q_norm = &L.q_norm;
        t.k_norm = &L.k_norm;
        t.q_w = &L.q.master;
        t.k_w = &L.k.master;
        t.v_w = &L.v.master;
        t.o_w = &L.o.master;
        t.gate_w = &L.gate.master;
        t.up_w = &L.up.master;
        t.down_w = &L.down.master;
        t.q_b = &L.q.bias;
        t.k_b = &L.k.bias;
        t.v_b = &L.v.bias;
        t.o_b = &L.o.bias;
        t.gate_b = &L.gate.bias;
        t.up_b = &L.up.bias;
        t.down_b = &L.down.bias;
        p.layers.push_back(t);
      }
    }
    return train_.get();
  }
  void sync_train_params() override {
    if (!train_) return;
    for (LayerStore& L : layers_)
      for (LinearStore* s : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) s->repack();
    const std::vector<float>& head = config_.tie_embeddings ? embed_ : lm_head_master_;
    lm_head_ = ops::pack_weight(head.data(), lm_head_.N, lm_head_.K, lm_head_.is_bf16());
  }
  std::mutex* train_mutex() override { return &mu_; }
  void repack_linear(const std::vector<float>* master, const float* values) override {
    for (LayerStore& L : layers_)
      for (LinearStore* s : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
        if (&s->master == master) {
          s->packed = ops::pack_weight(values, s->packed.N, s->packed.K, s->packed.is_bf16());
          return;
        }
    throw Error("ERR_INTERNAL", "repack_linear: not a linear weight of this model");
  }

 private:
  std::unique_ptr<TrainParams> train_;
  std::vector<float> lm_head_master_;
  ops::LayerDims dims_;
  std::vector<float> embed_, final_norm_;
  std::vector<double> inv_freq_;
  std::vector<LayerStore> layers_;
  ops::PackedWeight lm_head_;
  int slots_, context_;
  size_t kv_per_slot_layer_ = 0;
  std::vector<float> k_cache_, v_cache_;
  std::vector<int> lengths_;
  ops::LayerActs acts_;
  std::mutex mu_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& cfg, const WeightStore& weights, int slots, int context,
                                          bool round_bf16) {
  return std::make_unique<CpuBackend>(cfg, weights, slots, context, round_bf16);
}

std::unique_ptr<Backend> make_backend(const std::string& device, const ModelConfig& cfg, const WeightStore& weights,
                                      int slots, int context, bool round_bf16) {
  if (device == "cpu") return make_cpu_backend(cfg, weights, slots, context, round_bf16);
  if (device == "cuda" || device == "emulated")
    return make_cuda_backend(device == "emulated", cfg, weights, slots, context, round_bf16);
  throw Error("ERR_INVALID_ARG", "model device must be 'cpu', 'cuda' or 'emulated', got '" + device + "'");
}

}  // namespace recode::model
