"""Training-step speed: rgemma against transformers' RecurrentGemmaForCausalLM, same weights.

    python bench/train_speed.py                      # 2B-shaped, 3 layers, vocab 256000, fp32
    python bench/train_speed.py --vocab 32000 --bf16 # a smaller head, bfloat16 autocast

One step is forward (mean shifted cross-entropy over the batch), backward and an AdamW update,
on a random batch (default 1 x 512 tokens). Both models hold the same float32 weights (rgemma's
DeepMind initialisation, loaded into transformers by name), see the same batch, and use the same
optimizer settings; the first loss of each is printed as a check that they compute the same
thing. The models run one after the other in this process, so peak memory is one model plus its
optimizer state: about 14 GiB at vocab 256000 (the 655M-parameter embedding dominates).
Results go to stdout as one JSON line per implementation.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from rgemma import RecurrentGemmaConfig, RecurrentGemmaForCausalLM
from rgemma.training.trainer import param_groups


def config(layers: int, vocab: int) -> RecurrentGemmaConfig:
    return RecurrentGemmaConfig.from_preset("recurrentgemma-2b", num_hidden_layers=layers, vocab_size=vocab)


def hf_model(cfg: RecurrentGemmaConfig, weights: dict[str, torch.Tensor]):
    import transformers

    hf_cfg = transformers.RecurrentGemmaConfig(
        **{k: v for k, v in cfg.to_dict().items() if k not in ("architectures", "extra")}
    )
    model = transformers.RecurrentGemmaForCausalLM(hf_cfg)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"weights do not match transformers: {missing} {unexpected}")
    model.tie_weights()
    return model


def build(name: str, cfg: RecurrentGemmaConfig):
    """rgemma's model with DeepMind's init (seeded), or transformers' holding the same weights."""
    torch.manual_seed(0)
    model = RecurrentGemmaForCausalLM(cfg)
    if name == "transformers":
        model = hf_model(cfg, model.state_dict())  # the rgemma copy is dropped on return
    return model


def time_steps(model, ids: torch.Tensor, steps: int, bf16: bool) -> tuple[float, list[float]]:
    """Seconds per step (after one warm-up step) and the loss of every step."""
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-5, betas=(0.9, 0.95))
    losses, times = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu" if not ids.is_cuda else "cuda", torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ids.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    return sum(times[1:]) / steps, losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--vocab", type=int, default=256000)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=2, help="timed steps, after one warm-up step")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (weights stay fp32)")
    p.add_argument("--only", choices=("rgemma", "transformers"))
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    cfg = config(args.layers, args.vocab)
    ids = torch.randint(4, args.vocab, (args.batch, args.seq_len), device=device)
    tokens = args.batch * args.seq_len
    for name in ("rgemma", "transformers"):
        if args.only not in (None, name):
            continue
        model = build(name, cfg).to(device)
        secs, losses = time_steps(model, ids, args.steps, args.bf16)
        print(
            json.dumps(
                {
                    "impl": name,
                    "tokens_per_s": round(tokens / secs, 1),
                    "s_per_step": round(secs, 3),
                    "first_loss": losses[0],
                    "layers": args.layers,
                    "vocab": args.vocab,
                    "batch": args.batch,
                    "seq_len": args.seq_len,
                    "bf16": args.bf16,
                    "device": device,
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )
        del model
        gc.collect()


if __name__ == "__main__":
    main()
