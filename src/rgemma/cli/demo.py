"""A forward pass and a short greedy generation on a tiny random model (no weights needed)."""

import time

import torch

from rgemma import RecurrentGemmaConfig, RecurrentGemmaForCausalLM


def main() -> None:
    torch.manual_seed(0)
    config = RecurrentGemmaConfig(
        num_hidden_layers=6,
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=1,
        attention_window_size=64,
    )
    model = RecurrentGemmaForCausalLM(config).eval()
    prompt = torch.randint(0, 1000, (1, 256))
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=32, eos_token_id=[])
    secs = time.perf_counter() - start
    print(
        f"tiny random RecurrentGemma ({model.num_parameters() / 1e6:.2f}M params): "
        f"256 prompt + 32 new tokens in {secs:.2f}s; new ids {out[0, 256:].tolist()}"
    )


if __name__ == "__main__":
    main()
