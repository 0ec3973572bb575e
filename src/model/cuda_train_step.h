// Full fine-tuning on the CUDA backend (device 'cuda' on a GPU, 'emulated' through the SIMT emulation): the
// same step as the CPU FullTrainer (train_step.h) composed from the kernels of cuda/recode_cuda.h, with fp32
// master weights, gradients and AdamW moments resident on the device.
//
// Compute dtype: the backend's. An fp32 backend trains in fp32 on its own weight arrays (they are the master
// weights, so generation sees every update at once). A bf16 backend keeps fp32 masters beside its bf16
// weights; the forward and backward run in bf16 on those bf16 weights (activations and activation gradients
// bf16, weight gradients accumulated in fp32; the log-prob head's chunk GEMMs on tensor cores with fp32 logits,
// as in generation), and every update writes the rounded bf16 copy of the masters back into the backend.
//
// Adapters (AdapterSpec LoRA / DoRA, the CPU trainer's tensors, initial values and dropout masks): only A, B and
// DoRA's m are trained (fp32 masters, gradients and moments); adapted projections run cuda/adapters.cu plus
// GEMMs in the compute dtype (bf16: A and B rounded to bf16 copies after each change). The backend's arrays stay
// the base model: generation with adapters on runs them through the backend's projection hook (x W^T + s x A^T
// B^T, DoRA rescaled), so there is no merged or frozen second copy of the adapted matrices.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include <functional>

#include "device/kernels.h"
#include "model/cuda_decoder_layer.h"
#include "model/train_step.h"

namespace recode::model {

// Training access to a CUDA backend's device arrays (cuda_backend.cpp). Norms, matrices and the embedding are
// in the backend's storage dtype; biases and the RoPE frequencies are always fp32. lm_head is null when tied.
struct CudaLayerParams {
  void *input_norm = nullptr, *post_attention_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  void *q_w = nullptr, *k_w = nullptr, *v_w = nullptr, *o_w = nullptr, *gate_w = nullptr, *up_w = nullptr,
       *down_w = nullptr;
  float *q_b = nullptr, *k_b = nullptr, *v_b = nullptr, *o_b = nullptr, *gate_b = nullptr, *up_b = nullptr,
        *down_b = nullptr;  // null when the model has none
};
struct CudaParams {
  Device device = Device::Emulated;
  int dtype = 0;             // RECODE_F32 or RECODE_BF16: the storage type of the arrays below
  std::mutex* mu = nullptr;  // the backend's lock: training and generation never overlap
  const float* inv_freq = nullptr;
  void *embed = nullptr, *final_norm = nullptr, *lm_head = nullptr;
  std::vector<CudaLayerParams> layers;
  // Generation's substitute for projection p of layer l (an adapter trainer installs it; empty: the plain
  // linear), and which trainer installed it. Set and cleared under `mu`.
  using Project = std::function<bool(int l, int p, const cuda_layer::Linear& L, const void* x, void* y, int M)>;
  Project* generation_project = nullptr;
  // Generation and training take turns, so neither keeps its buffers through the other's peak: the backend frees
  // its step buffers when a training forward starts (release_generation), and before a generation step calls
  // what the trainer installed in *release_training (freeing its workspace unless a backward is pending).
  std::function<void()> release_generation;
  std::function<void()>* release_training = nullptr;
  const void** hooks_owner = nullptr;  // the trainer that installed the two hooks
};
// Throws ERR_UNSUPPORTED when `b` is not a CUDA backend.
CudaParams cuda_train_params(Backend& b);

// The trainer for a 'cuda' / 'emulated' backend (make_trainer dispatches here): full fine-tuning, or LoRA / DoRA
// adapters (fp32 A, B, m on the device; the base frozen, with a device copy of each adapted projection so the
// backend's own array can hold the merged weight generation reads).
std::shared_ptr<Trainer> make_cuda_trainer(std::shared_ptr<Backend> backend, const AdapterSpec& spec);

}  // namespace recode::model
