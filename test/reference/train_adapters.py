"""Reference for test/train-adapters.test.mjs: one LoRA / DoRA linear layer written after PEFT's definitions
(peft/tuners/lora/layer.py, variants.py DoraLinearVariant.forward, dora.py DoraLinearLayer), differentiated by
torch autograd in float64. Input is a JSON list of jobs on stdin, output the list of results. The dropout mask is given by the test
(the native counter-based mask), applied as inverted dropout like nn.Dropout."""
import json
import sys

import torch


def run(job):
    n, fin, fout, r = job["rows"], job["in"], job["out"], job["rank"]
    t = lambda v, *shape: torch.tensor(v, dtype=torch.float64).reshape(*shape)
    x = t(job["x"], n, fin).requires_grad_(True)
    W = t(job["weight"], fout, fin)
    bias = t(job["bias"], fout) if job.get("bias") is not None else None
    A = t(job["loraA"], r, fin).requires_grad_(True)
    B = t(job["loraB"], fout, r).requires_grad_(True)
    s = job["scaling"]
    p = job["dropout"]
    dy = t(job["dy"], n, fout)
    dora = job.get("magnitude") is not None

    # base layer: result = x W^T + b (never dropped)
    result = x @ W.T
    if bias is not None:
        result = result + bias
    # lora_dropout on the adapter input (inverted dropout with the given mask)
    if p > 0:
        mask = t(job["mask"], n, fin)
        xd = x * mask / (1.0 - p)
    else:
        xd = x
    lora_result = (xd @ A.T) @ B.T
    out = {}
    if not dora:
        y = result + lora_result * s
    else:
        m = t(job["magnitude"], fout).requires_grad_(True)
        lora_weight = B @ A
        # get_weight_norm: row norm of W + s * lora_weight, with lora_weight detached; then the norm detached
        weight_norm = torch.linalg.norm(W + s * lora_weight.detach(), dim=1).detach()
        mag_norm_scale = (m / weight_norm).view(1, -1)
        if p > 0:
            base_result = xd @ W.T  # dropout active: PEFT recomputes F.linear on the dropped input
        else:
            base_result = result - bias if bias is not None else result  # PEFT reuses the base output minus bias
        y = result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * s
        out["weightNorm"] = weight_norm.tolist()
    (y * dy).sum().backward()
    out["y"] = y.detach().reshape(-1).tolist()
    out["dx"] = x.grad.reshape(-1).tolist()
    out["dA"] = A.grad.reshape(-1).tolist()
    out["dB"] = B.grad.reshape(-1).tolist()
    if dora:
        out["dm"] = m.grad.reshape(-1).tolist()
    return out


def main():
    jobs = json.load(sys.stdin)
    json.dump([run(job) for job in jobs], sys.stdout)


if __name__ == "__main__":
    main()
