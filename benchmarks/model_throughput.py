"""Forward+backward tokens/s: gradpower's Llama (eager and ``torch.compile``d) vs ``transformers.LlamaForCausalLM``.

Both models are built from the same config (the HF one through ``to_hf``'s
config translation, with the same weights) and timed in this one process on
the same batches; the ratios to transformers are printed per preset, with the
compiled model's first-call compile time. On CUDA the model FLOPs utilisation
(6 x parameters x tokens per second over the GPU's peak bf16 FLOP/s,
``--peak-tflops``) is printed too.

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
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["llama-tiny", "llama-small"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak bf16 TFLOP/s (H100 SXM: 989)")
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
        compiled = build_model(config).to(device)
        compiled.load_state_dict(ours.state_dict())
        compiled.compile()
        start = time.perf_counter()
        train_step(compiled, device, dtype)(batch)
        compile_s = time.perf_counter() - start
        compiled_rate = tokens_per_s(train_step(compiled, device, dtype), batch, args.repeats, device)
        line = (f"{name:12s} seq={config.max_seq_len} batch={args.batch_size}  transformers {hf_rate:9.0f} tok/s  "
                f"gradpower {our_rate:9.0f} tok/s ({our_rate / hf_rate:4.2f}x)  compiled {compiled_rate:9.0f} tok/s "
                f"({compiled_rate / hf_rate:4.2f}x, first call {compile_s:.1f} s)")
        if device.type == "cuda":
            params = sum(p.numel() for p in ours.parameters())
            line += f"  MFU eager {6 * params * our_rate / (args.peak_tflops * 1e12):.1%} compiled " \
                    f"{6 * params * compiled_rate / (args.peak_tflops * 1e12):.1%}"
        print(line)


if __name__ == "__main__":
    main()
