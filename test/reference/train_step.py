"""Independent reference for test/train-step.test.mjs: the gradients of a weighted next-token loss with respect
to every parameter, by torch autograd through transformer.py's plain model (float64).

usage: python3 train_step.py < JOBS_JSON
  JOBS_JSON: a list of {"dir": MODEL_DIR, "ids": [[token ids], ...], "weights": [[one per token], ...],
  "names": [tensor names], "out": OUT_FILE}. loss = -sum_s sum_{t>=1} weights[s][t] * log p(ids[s][t] | ids[s][<t]).
  OUT_FILE receives float64 little-endian: the loss, then logp of every token (0 for each sequence's first),
  then the gradient of each tensor in `names`, in that order.
  Optional "adapter": {"file": SAFETENSORS of PEFT-named tensors, "type": "lora" | "dora", "scaling": alpha / r}:
  LoRA / DoRA layers (transformer.forward's `adapters`) on every module the file names; `names` are then PEFT
  names and their gradients are the adapters'.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transformer import forward, load_weights, read_safetensors  # noqa: E402


def main():
    for job in json.load(sys.stdin):
        cfg = json.load(open(os.path.join(job["dir"], "config.json")))
        w = load_weights(job["dir"])
        adapters = None
        if job.get("adapter"):
            spec = job["adapter"]
            tensors = {k: v.to(torch.float64) for k, v in read_safetensors(spec["file"]).items()}
            adapters = {}
            for name, t in tensors.items():
                if name.endswith(".lora_A.weight"):
                    module = name[len("base_model.model."):-len(".lora_A.weight")]
                    base = name[:-len(".lora_A.weight")]
                    adapters[module] = {
                        "A": tensors[base + ".lora_A.weight"],
                        "B": tensors[base + ".lora_B.weight"],
                        "m": tensors[base + ".lora_magnitude_vector"] if spec["type"] == "dora" else None,
                        "scaling": spec["scaling"],
                    }
            w = dict(w)
            for t in tensors.values():
                t.requires_grad_(True)
            w.update(tensors)  # the names the gradients are read from
        else:
            for t in w.values():
                t.requires_grad_(True)
        loss = torch.zeros((), dtype=torch.float64)
        logps = []
        for ids, wts in zip(job["ids"], job["weights"]):
            logits = forward(cfg, w, ids, adapters)
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
