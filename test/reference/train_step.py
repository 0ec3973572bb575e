"""Independent reference for test/train-step.test.mjs: the gradients of a weighted next-token loss with respect
to every parameter, by torch autograd through transformer.py's plain model (float64).

usage: python3 train_step.py < JOBS_JSON
  JOBS_JSON: a list of {"dir": MODEL_DIR, "ids": [[token ids], ...], "weights": [[one per token], ...],
  "names": [tensor names], "out": OUT_FILE}. loss = -sum_s sum_{t>=1} weights[s][t] * log p(ids[s][t] | ids[s][<t]).
  OUT_FILE receives float64 little-endian: the loss, then logp of every token (0 for each sequence's first),
  then the gradient of each tensor in `names`, in that order.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transformer import forward, load_weights  # noqa: E402


def main():
    for job in json.load(sys.stdin):
        cfg = json.load(open(os.path.join(job["dir"], "config.json")))
        w = load_weights(job["dir"])
        for t in w.values():
            t.requires_grad_(True)
        loss = torch.zeros((), dtype=torch.float64)
        logps = []
        for ids, wts in zip(job["ids"], job["weights"]):
            logits = forward(cfg, w, ids)
            lp = torch.log_softmax(logits, dim=-1)
            target = torch.tensor(ids[1:])
            tok_lp = lp[:-1].gather(1, target[:, None])[:, 0]
            loss = loss - (torch.tensor(wts[1:], dtype=torch.float64) * tok_lp).sum()
            logps.append(np.concatenate([[0.0], tok_lp.detach().numpy()]))
        loss.backward()
        parts = [np.array([loss.item()]), *logps]
        for name in job["names"]:
            g = w[name].grad
            parts.append(np.zeros(w[name].numel()) if g is None else g.numpy().reshape(-1))
        np.concatenate(parts).astype("<f8").tofile(job["out"])


if __name__ == "__main__":
    main()
