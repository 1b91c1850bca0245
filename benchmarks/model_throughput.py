"""Forward+backward tokens/s: gradpower's Llama vs ``transformers.LlamaForCausalLM``.

Both models are built from the same config (the HF one through ``to_hf``'s
config translation, with the same weights) and timed in this one process on
the same batches; the ratio ours / transformers is printed per preset.

    python benchmarks/model_throughput.py [--device cpu|cuda] [--presets llama-tiny llama-small]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers

from gradpower.models import build_model, preset, to_hf


def tokens_per_s(step, batch: torch.Tensor, repeats: int, device: torch.device) -> float:
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return batch.numel() / statistics.median(times)


def train_step(model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """Forward + backward of ``model(x, labels=x)`` (both models take this call)."""

    def step(x: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = model(x, labels=x).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["llama-tiny", "llama-small"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"device={device} dtype={dtype} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"transformers={transformers.__version__}")
    for name in args.presets:
        config = preset(name)
        ours = build_model(config).to(device)
        with tempfile.TemporaryDirectory() as tmp:
            to_hf(ours, tmp)
            theirs = transformers.LlamaForCausalLM.from_pretrained(tmp, attn_implementation="sdpa").to(device)
        theirs.train()
        batch = torch.randint(0, config.vocab_size, (args.batch_size, config.max_seq_len), device=device)

        hf_rate = tokens_per_s(train_step(theirs, device, dtype), batch, args.repeats, device)
        our_rate = tokens_per_s(train_step(ours, device, dtype), batch, args.repeats, device)
        print(f"{name:12s} seq={config.max_seq_len} batch={args.batch_size}  transformers {hf_rate:10.0f} tok/s  "
              f"gradpower {our_rate:10.0f} tok/s  ratio {our_rate / hf_rate:5.2f}x")


if __name__ == "__main__":
    main()
