"""Independent reference for the model tests: Qwen2 / Llama / Qwen3 causal LMs written plainly in torch from
the published definitions (Hugging Face modeling_qwen2.py / modeling_llama.py / modeling_qwen3.py), computed
in float64. Reads config.json and model.safetensors itself (torch 1.13 has no safetensors reader).

usage: python3 transformer.py < JOBS_JSON
  JOBS_JSON: a list of {"dir": MODEL_DIR, "ids": [[token ids], ...], "out": OUT_FILE}. Each OUT_FILE receives
  the float64 logits of every sequence, concatenated ([sum T, V], row-major, little-endian).
"""
import json
import math
import struct
import sys

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        buf = data[b:e]
        if t["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(np.float64)
        elif t["dtype"] == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(np.float64)
        elif t["dtype"] == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            raise ValueError("dtype " + t["dtype"])
        out[name] = torch.from_numpy(a.reshape(t["shape"]).copy())
    return out


def load_weights(model_dir):
    import os
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for f in files:
        w.update(read_safetensors(os.path.join(model_dir, f)))
    return w


def rms_norm(x, weight, eps):
    # LlamaRMSNorm / Qwen2RMSNorm: x * rsqrt(mean(x^2) + eps) * weight
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rope_inv_freq(cfg, head_dim):
    base = cfg.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        # _compute_llama3_parameters
        factor = rs["factor"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        old_ctx = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_ctx / low
        high_freq_wavelen = old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium, smoothed, inv_freq_llama)
    return inv_freq


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def forward(cfg, w, ids, adapters=None):
    """Logits [T, V]. `adapters` (optional): module name -> {"A", "B", "m" (DoRA, else None), "scaling"}, applied as
    PEFT's LoRA / DoRA layers without dropout (DoRA's row norm detached, as PEFT does)."""
    arch = cfg["architectures"][0]
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads", H)
    D = cfg.get("head_dim") or C // H
    eps = cfg["rms_norm_eps"]
    L = cfg["num_hidden_layers"]
    T = len(ids)
    qkv_bias = arch == "Qwen2ForCausalLM" or cfg.get("attention_bias", False)
    o_bias = arch != "Qwen2ForCausalLM" and cfg.get("attention_bias", False)
    mlp_bias = arch == "LlamaForCausalLM" and cfg.get("mlp_bias", False)

    def lin(x, name, bias):
        W = w[name + ".weight"]
        y = x @ W.T
        ad = adapters.get(name) if adapters else None
        if ad is not None:
            lora = (x @ ad["A"].T) @ ad["B"].T * ad["scaling"]
            if ad["m"] is None:
                y = y + lora
            else:
                norm = (W + ad["scaling"] * ad["B"] @ ad["A"]).norm(dim=1).detach()
                c = ad["m"] / norm
                y = y + (c - 1) * y + c * lora
        return y + w[name + ".bias"] if bias else y

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    pos = torch.arange(T, dtype=torch.float64)
    freqs = torch.outer(pos, rope_inv_freq(cfg, D))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(L):
        p = "model.layers.%d." % l
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = lin(h, p + "self_attn.q_proj", qkv_bias).view(T, H, D)
        k = lin(h, p + "self_attn.k_proj", qkv_bias).view(T, Hkv, D)
        v = lin(h, p + "self_attn.v_proj", qkv_bias).view(T, Hkv, D)
        if arch == "Qwen3ForCausalLM":
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q.transpose(0, 1)  # [H, T, D]
        k = k.transpose(0, 1)
        v = v.transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=0)  # repeat_kv
        v = v.repeat_interleave(H // Hkv, dim=0)
        scores = q @ k.transpose(1, 2) / math.sqrt(D) + mask
        att = torch.softmax(scores, dim=-1) @ v  # [H, T, D]
        att = att.transpose(0, 1).reshape(T, H * D)
        x = x + lin(att, p + "self_attn.o_proj", o_bias)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = lin(h, p + "mlp.gate_proj", mlp_bias)
        up = lin(h, p + "mlp.up_proj", mlp_bias)
        x = x + lin(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj", mlp_bias)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return x @ head.T


def main():
    import os
    for job in json.load(sys.stdin):
        cfg = json.load(open(os.path.join(job["dir"], "config.json")))
        w = load_weights(job["dir"])
        with torch.no_grad():
            logits = [forward(cfg, w, s) for s in job["ids"]]
        np.concatenate([l.numpy() for l in logits]).astype("<f8").tofile(job["out"])


if __name__ == "__main__":
    main()
