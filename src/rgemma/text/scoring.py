"""Scoring text with a model: log-likelihoods of given tokens."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def document_perplexity(model, tokenizer, docs: list[str]) -> dict[str, float]:
    """Token-weighted perplexity over `docs`, each read with BOS and EOS (the way the bundled
    model is trained): documents, tokens, mean loss and perplexity."""
    total, count = 0.0, 0
    for doc in docs:
        ids = tokenizer.encode(doc) + ([tokenizer.eos_id] if tokenizer.eos_id is not None else [])
        if len(ids) < 2:
            continue
        x = torch.tensor([ids], device=model.device)
        logits = model(x, use_cache=False).logits[0, :-1].float()
        total += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
        count += len(ids) - 1
    return {
        "documents": len(docs),
        "tokens": count,
        "loss": total / count,
        "perplexity": math.exp(total / count),
    }
