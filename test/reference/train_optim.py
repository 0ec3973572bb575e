"""Reference for test/train-optim.test.mjs: torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ on the
tensors the test gives (a JSON list of jobs on stdin), printing a JSON list of results. Run with Debian's python3-torch."""
import json
import sys

import torch


def run(job):
    out = {}
    if job["op"] == "adamw":
        params = [torch.tensor(p, dtype=torch.float32) for p in job["params"]]
        decay = job["decay"]
        groups = [
            {"params": [p for p, d in zip(params, decay) if d], "weight_decay": job["weightDecay"]},
            {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.AdamW(groups, lr=job["lr"], betas=(job["beta1"], job["beta2"]), eps=job["eps"])
        for step_grads, lr in zip(job["grads"], job["lrs"]):
            for g in opt.param_groups:
                g["lr"] = lr
            for p, g in zip(params, step_grads):
                p.grad = torch.tensor(g, dtype=torch.float32)
            opt.step()
        out["params"] = [p.tolist() for p in params]
        out["expAvg"] = [opt.state[p]["exp_avg"].tolist() for p in params]
        out["expAvgSq"] = [opt.state[p]["exp_avg_sq"].tolist() for p in params]
    elif job["op"] == "clip":
        params = [torch.zeros(len(g), dtype=torch.float32, requires_grad=True) for g in job["grads"]]
        for p, g in zip(params, job["grads"]):
            p.grad = torch.tensor(g, dtype=torch.float32)
        norm = torch.nn.utils.clip_grad_norm_(params, job["maxNorm"])
        out["norm"] = float(norm)
        out["grads"] = [p.grad.tolist() for p in params]
    else:
        raise SystemExit("unknown op " + job["op"])
    return out


def main():
    jobs = json.load(sys.stdin)
    json.dump([run(job) for job in jobs], sys.stdout)


if __name__ == "__main__":
    main()
