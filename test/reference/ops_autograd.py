"""Torch autograd (float64) for the op tests: reads a JSON list of cases from stdin, writes a JSON list of
results to stdout. Each case names an op, its inputs (flat lists + dims) and the upstream gradient `dout`;
the result holds the forward output and the gradient of sum(out * dout) wrt every input.
Definitions follow Hugging Face's Llama/Qwen modules (RMSNorm, rotate-half RoPE, SwiGLU, causal SDPA)."""
import json
import math
import sys

import torch

torch.set_default_dtype(torch.float64)


def t(x, shape=None):
    v = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    return v if shape is None else v.detach().reshape(shape).requires_grad_(True)


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, pos, theta):  # x [T, H, D]
    D = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    f = torch.outer(torch.tensor(pos, dtype=torch.float64), inv)
    emb = torch.cat((f, f), -1)[:, None, :]
    return x * emb.cos() + rotate_half(x) * emb.sin()


def attention(q, k, v, q_pos0, scale):  # q [T,H,D], k/v [S,Hkv,D]
    T, H, D = q.shape
    S, Hkv, _ = k.shape
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    s = torch.einsum("thd,shd->hts", q, k) * scale
    mask = torch.arange(S)[None, :] > (torch.arange(T)[:, None] + q_pos0)
    s = s.masked_fill(mask[None], float("-inf"))
    return torch.einsum("hts,shd->thd", torch.softmax(s, -1), v)


def decoder_layer(c, W, x, pos):
    d = c["dims"]
    T, C, H, Hkv, D = len(pos), d["C"], d["H"], d["Hkv"], d["D"]
    fan_in = {"q": C, "k": C, "v": C, "o": H * D, "gate": C, "up": C, "down": d["F"]}

    def lin(h, n):
        y = h @ W[n + "_w"].view(-1, fan_in[n]).T
        return y + W[n + "_b"] if (n + "_b") in W else y
    h = rms_norm(x, W["input_norm"], d["eps"])
    q = lin(h, "q").view(T, H, D)
    k = lin(h, "k").view(T, Hkv, D)
    v = lin(h, "v").view(T, Hkv, D)
    if d.get("qkNorm"):
        q = rms_norm(q, W["q_norm"], d["eps"])
        k = rms_norm(k, W["k_norm"], d["eps"])
    q = rope(q, pos, d["theta"])
    k = rope(k, pos, d["theta"])
    a = attention(q, k, v, 0, 1.0 / math.sqrt(D)).reshape(T, H * D)
    x = x + lin(a, "o")
    h = rms_norm(x, W["post_attention_norm"], d["eps"])
    return x + lin(torch.nn.functional.silu(lin(h, "gate")) * lin(h, "up"), "down")


def run(c):
    op = c["op"]
    if op == "linear":
        M, N, K = c["M"], c["N"], c["K"]
        x, W, b = t(c["x"], (M, K)), t(c["W"], (N, K)), t(c["b"], (N,))
        ins = {"x": x, "W": W, "b": b}
        out = x @ W.T + b
    elif op == "rmsnorm":
        N, C = c["N"], c["C"]
        x, w = t(c["x"], (N, C)), t(c["w"], (C,))
        ins = {"x": x, "w": w}
        out = rms_norm(x, w, c["eps"])
    elif op == "swiglu":
        g, u = t(c["gate"]), t(c["up"])
        ins = {"gate": g, "up": u}
        out = torch.nn.functional.silu(g) * u
    elif op == "rope":
        x = t(c["x"], (c["T"], c["H"], c["D"]))
        ins = {"x": x}
        out = rope(x, c["pos"], c["theta"])
    elif op == "attention":
        s = c["shape"]
        q = t(c["q"], (s["T"], s["H"], s["D"]))
        k = t(c["k"], (s["S"], s["Hkv"], s["D"]))
        v = t(c["v"], (s["S"], s["Hkv"], s["D"]))
        ins = {"q": q, "k": k, "v": v}
        out = attention(q, k, v, s["qPos0"], 1.0 / math.sqrt(s["D"]))
    elif op == "layer":
        W = {n: t(v) for n, v in c["weights"].items()}
        x = t(c["x"], (len(c["pos"]), c["dims"]["C"]))
        ins = dict(W)
        ins["x"] = x
        out = decoder_layer(c, W, x, c["pos"])
    else:
        raise ValueError(op)
    dout = torch.tensor(c["dout"], dtype=torch.float64).reshape(out.shape)
    (out * dout).sum().backward()
    return {"out": out.detach().reshape(-1).tolist(), "grads": {n: v.grad.reshape(-1).tolist() for n, v in ins.items()}}


json.dump([run(c) for c in json.load(sys.stdin)], sys.stdout)
