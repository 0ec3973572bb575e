"""The program a CPU user would otherwise run: a Qwen2 causal LM written plainly in eager PyTorch from the published
architecture (RMSNorm, rotary embeddings on the two halves of each head, grouped-query attention with q/k/v biases,
SwiGLU MLP, optional tied head), nothing fused, nothing compiled. bench/peers.bench.mjs times it beside recode on
the same weights after checking its logits against recode's.

usage: /usr/bin/python3 qwen2_torch.py < JOB_JSON, prints one JSON result.
  JOB_JSON: {"dir": MODEL_DIR, "threads": N, "tasks": [TASK, ...]}, where TASK is one of
    {"op": "logits", "ids": [[ids], ...], "out32": FILE, "out64": FILE}
        writes the logits of every position of every sequence, computed in float32 and in float64
        ([sum T, V] little-endian float32 / float64), for the agreement check;
    {"op": "train", "ids": [[S ids] x B], "reps": R}
        forward + backward (no optimizer) of the next-token loss averaged over the B x (S - 1) predicted tokens;
        median wall and process CPU seconds of R steps after one warm-up step, and the loss;
    {"op": "decode", "batch": B, "prompt": P, "steps": N}
        greedy decode with a KV cache: a prompt of P tokens per row, then N one-token steps for B rows;
        decode tokens/s (B * N / seconds of the N steps), median over 3 runs, and cacheError: max |difference| of
        the last step's logits from one uncached forward over the whole sequence.
Reads safetensors itself (torch 1.13 has no reader).
"""
import json
import os
import struct
import sys
import time

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        if t["dtype"] == "F32":
            a = np.frombuffer(data[b:e], dtype="<f4")
        elif t["dtype"] == "BF16":
            a = (np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError("unsupported dtype " + t["dtype"])
        out[name] = torch.from_numpy(a.reshape(t["shape"]).copy())
    return out


class Qwen2:
    def __init__(self, model_dir, dtype):
        cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.C = cfg["hidden_size"]
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg["num_key_value_heads"]
        self.D = cfg.get("head_dim") or self.C // self.H
        self.eps = cfg["rms_norm_eps"]
        self.theta = cfg.get("rope_theta", 10000.0)
        w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.w = {k: v.to(dtype) for k, v in w.items()}
        if cfg.get("tie_word_embeddings") or "lm_head.weight" not in self.w:
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
        self.dtype = dtype

    def params(self):
        return list({id(t): t for t in self.w.values()}.values())

    def rms_norm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope_tables(self, pos):
        # cos / sin of position x inverse frequency, the frequencies repeated over both halves of a head
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.D, 2, dtype=torch.float64) / self.D))
        freqs = pos.to(torch.float64)[:, None] * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def rope(self, x, cos, sin):
        # x: [B, heads, T, D]
        half = self.D // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def forward(self, ids, cache=None, start=0):
        """ids [B, T] -> logits [B, T, V]. With a cache (per layer [k, v] tensors [B, Hkv, maxT, D]) the keys and
        values of positions start..start+T-1 are written into it and attention reads positions 0..start+T-1."""
        w = self.w
        B, T = ids.shape
        x = w["model.embed_tokens.weight"][ids]
        cos, sin = self.rope_tables(torch.arange(start, start + T))
        S = start + T
        # causal mask over the keys 0..S-1 for queries start..S-1
        mask = torch.full((T, S), float("-inf"), dtype=self.dtype).triu(start + 1)
        for l in range(self.L):
            p = "model.layers.%d." % l
            h = self.rms_norm(x, w[p + "input_layernorm.weight"])
            q = torch.nn.functional.linear(h, w[p + "self_attn.q_proj.weight"], w[p + "self_attn.q_proj.bias"])
            k = torch.nn.functional.linear(h, w[p + "self_attn.k_proj.weight"], w[p + "self_attn.k_proj.bias"])
            v = torch.nn.functional.linear(h, w[p + "self_attn.v_proj.weight"], w[p + "self_attn.v_proj.bias"])
            q = self.rope(q.view(B, T, self.H, self.D).transpose(1, 2), cos, sin)
            k = self.rope(k.view(B, T, self.Hkv, self.D).transpose(1, 2), cos, sin)
            v = v.view(B, T, self.Hkv, self.D).transpose(1, 2)
            if cache is not None:
                ck, cv = cache[l]
                ck[:, :, start:S] = k
                cv[:, :, start:S] = v
                k, v = ck[:, :, :S], cv[:, :, :S]
            rep = self.H // self.Hkv  # grouped-query attention: each key/value head serves `rep` query heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = torch.matmul(q, k.transpose(-1, -2)) * (self.D**-0.5) + mask
            att = torch.softmax(att, -1)
            o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, self.H * self.D)
            x = x + torch.nn.functional.linear(o, w[p + "self_attn.o_proj.weight"])
            h = self.rms_norm(x, w[p + "post_attention_layernorm.weight"])
            gate = torch.nn.functional.linear(h, w[p + "mlp.gate_proj.weight"])
            up = torch.nn.functional.linear(h, w[p + "mlp.up_proj.weight"])
            x = x + torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w[p + "mlp.down_proj.weight"])
        x = self.rms_norm(x, w["model.norm.weight"])
        return torch.nn.functional.linear(x, w["lm_head.weight"])


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def run_logits(model_dir, task):
    for dtype, key, np_dtype in ((torch.float32, "out32", "<f4"), (torch.float64, "out64", "<f8")):
        m = Qwen2(model_dir, dtype)
        rows = []
        with torch.no_grad():
            for ids in task["ids"]:
                rows.append(m.forward(torch.tensor([ids]))[0].numpy().astype(np_dtype))
        tmp = task[key] + ".tmp"
        np.concatenate(rows, 0).tofile(tmp)
        os.replace(tmp, task[key])
    return {"op": "logits"}


def run_train(m, V, task):
    ids = torch.tensor(task["ids"])
    B, S = ids.shape
    # the bench's SFT weights (bench/lib.mjs sftBatch): every predicted token, mean over the batch
    weight = 1.0 / (B * (S - 1))
    for t in m.params():
        t.requires_grad_(True)

    def step():
        for t in m.params():
            t.grad = None
        logits = m.forward(ids)
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])
        loss = -(logp.sum() * weight)
        loss.backward()
        return float(loss)

    loss = step()
    times, cpu = [], []
    for _ in range(task["reps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    for t in m.params():
        t.requires_grad_(False)
        t.grad = None
    return {"op": "train", "seconds": median(times), "cpuSeconds": median(cpu), "samples": times, "loss": loss}


def run_decode(m, V, task):
    B, P, N = task["batch"], task["prompt"], task["steps"]
    prompt = torch.tensor([[(i * 7919 + b) % min(V, 400) for i in range(P)] for b in range(B)])
    rates = []
    with torch.no_grad():
        for _ in range(3):
            cache = [
                (torch.zeros(B, m.Hkv, P + N, m.D, dtype=m.dtype), torch.zeros(B, m.Hkv, P + N, m.D, dtype=m.dtype))
                for _ in range(m.L)
            ]
            logits = m.forward(prompt, cache, 0)
            tok = logits[:, -1].argmax(-1, keepdim=True)
            fed = [tok]
            t0 = time.perf_counter()
            for s in range(N):
                logits = m.forward(tok, cache, P + s)
                tok = logits[:, -1].argmax(-1, keepdim=True)
                fed.append(tok)
            rates.append(B * N / (time.perf_counter() - t0))
        # the cached path against one forward over the whole sequence (the last step's logits)
        full = m.forward(torch.cat([prompt] + fed[:-1], 1))[:, -1]
        cache_error = float((full - logits[:, -1]).abs().max())
    return {"op": "decode", "tokensPerSecond": median(rates), "samples": rates, "cacheError": cache_error}


def main():
    job = json.load(sys.stdin)
    torch.set_num_threads(int(job.get("threads", 2)))
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": []}
    model = None
    for task in job["tasks"]:
        if task["op"] == "logits":
            out["results"].append(run_logits(job["dir"], task))
            continue
        if model is None:
            model = Qwen2(job["dir"], torch.float32)
        V = model.w["lm_head.weight"].shape[0]
        if task["op"] == "train":
            out["results"].append(run_train(model, V, task))
        elif task["op"] == "decode":
            out["results"].append(run_decode(model, V, task))
        else:
            raise ValueError("unknown op " + task["op"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
