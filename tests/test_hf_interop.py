"""Round trips through transformers: our logits equal LlamaForCausalLM / Qwen2MoeForCausalLM."""

import pytest
import torch

from gradpower.models import build_model, from_hf, preset, to_hf

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "name, hf_class", [("llama-tiny", "LlamaForCausalLM"), ("qwen2moe-tiny", "Qwen2MoeForCausalLM")]
)
def test_round_trip_logits(name, hf_class, tmp_path):
    torch.manual_seed(0)
    model = build_model(preset(name, vocab_size=300)).eval()
    to_hf(model, tmp_path / "hf")
    hf = getattr(transformers, hf_class).from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        ours = model(x).logits
        torch.testing.assert_close(hf(x).logits, ours, rtol=1e-5, atol=1e-5)
        back = from_hf(tmp_path / "hf").eval()
        torch.testing.assert_close(back(x).logits, ours, rtol=0, atol=0)
    # A checkpoint that transformers itself saved (its own expert layout) loads too.
    hf.save_pretrained(tmp_path / "resaved")
    with torch.no_grad():
        torch.testing.assert_close(from_hf(tmp_path / "resaved")(x).logits, ours, rtol=1e-6, atol=1e-6)


def test_gpas_model_is_folded_on_export(tmp_path):
    # eps 1e-12: folding is exact up to RMSNorm eps, so make eps negligible for the comparison.
    model = build_model(preset("llama-tiny", vocab_size=300, norm="pre_gpas", rms_eps=1e-12)).eval()
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.gpas.gate.fill_(0.1 * (i + 1))
    to_hf(model, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 300, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x).logits, rtol=1e-4, atol=1e-4)


def test_export_refuses_post_ln_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="Pre-LN"):
        to_hf(build_model(preset("llama-tiny", vocab_size=300, norm="post")), tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_hf(tmp_path / "nope")
