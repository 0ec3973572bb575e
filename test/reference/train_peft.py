"""Checks recode's PEFT adapter folders with PEFT itself (test/train-peft.test.mjs). Needs a python with peft and
transformers (RECODE_PEFT_PYTHON). Commands (JSON on stdin, JSON on stdout):
  {"op": "base", "dir": ...}: writes a tiny random Qwen2 model folder and returns its linear layers' shapes.
  {"op": "check", "base": ..., "adapter": ..., "modules": [...], "x": {module: [[...]]}}: loads the adapter with
  PeftModel.from_pretrained, returns per module the weights PEFT loaded, the base weight and bias, PEFT's output
  for x (eval mode), the gradients of sum(y * dy) (train mode, dropout 0), and the merged weight after
  merge_and_unload."""
import json
import sys

import torch


def base(job):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(job["dir"], safe_serialization=True)
    shapes = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers."):
            shapes[name] = [mod.out_features, mod.in_features]
    return {"shapes": shapes}


def get(model, path):
    for part in path.split("."):
        model = getattr(model, part)
    return model


def check(job):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(job["base"], torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(model, job["adapter"])
    model.eval()
    out = {}
    for path in job["modules"]:
        layer = get(model.base_model.model, path)
        x = torch.tensor(job["x"][path], dtype=torch.float32)
        with torch.no_grad():
            y = layer(x)
        entry = {
            "loraA": layer.lora_A["default"].weight.flatten().tolist(),
            "loraB": layer.lora_B["default"].weight.flatten().tolist(),
            "scaling": layer.scaling["default"],
            "weight": layer.base_layer.weight.flatten().tolist(),
            "bias": layer.base_layer.bias.tolist() if layer.base_layer.bias is not None else None,
            "y": y.flatten().tolist(),
        }
        if layer.use_dora["default"]:
            entry["magnitude"] = layer.lora_magnitude_vector["default"].weight.flatten().tolist()
        # Training-mode backward through PEFT's layer (dropout probability set to 0 so the mask is not random).
        layer.train()
        layer.lora_dropout["default"].p = 0.0
        params = [layer.lora_A["default"].weight, layer.lora_B["default"].weight]
        if layer.use_dora["default"]:
            params.append(layer.lora_magnitude_vector["default"].weight)
        for p in params:  # loaded for inference (is_trainable=False): enable gradients for this check
            p.requires_grad_(True)
        xg = x.clone().requires_grad_(True)
        dy = torch.tensor(job["dy"][path], dtype=torch.float32)
        (layer(xg) * dy).sum().backward()
        entry["dx"] = xg.grad.flatten().tolist()
        entry["dA"] = layer.lora_A["default"].weight.grad.flatten().tolist()
        entry["dB"] = layer.lora_B["default"].weight.grad.flatten().tolist()
        if layer.use_dora["default"]:
            entry["dm"] = layer.lora_magnitude_vector["default"].weight.grad.flatten().tolist()
        layer.eval()
        out[path] = entry
    merged = model.merge_and_unload()
    for path in job["modules"]:
        out[path]["merged"] = get(merged, path).weight.flatten().tolist()
    return out


def main():
    jobs = json.load(sys.stdin)
    json.dump([base(j) if j["op"] == "base" else check(j) for j in jobs], sys.stdout)


if __name__ == "__main__":
    main()
