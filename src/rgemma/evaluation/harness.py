"""rgemma as an lm-evaluation-harness model, "rgemma", with no server in between.

    rgemma eval --model DIR --tasks hellaswag,wikitext --batch-size 16
    lm_eval.simple_evaluate(model="rgemma", model_args={"pretrained": DIR}, ...)  # after import

`loglikelihood` requests are scored in left-padded batches by rgemma.text.scoring (the chunked
prefill with the LM head per chunk); `loglikelihood_rolling` scores each whole document in one
pass, BOS first, with no window and no truncation (the state is fixed-size, so nothing is cut);
`generate_until` runs the text engine's batches. Strings are tokenized with the tokenizer's
usual BOS, as the Gemma checkpoints were trained (lm-eval's HF model does the same for Gemma).
"""

from __future__ import annotations

from collections import defaultdict

import lm_eval.models  # noqa: F401  lm-eval's own models first: it fills an empty registry only
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from rgemma.pretrained.loading import load
from rgemma.text.engine import GenerationConfig, complete
from rgemma.text.sampling import SamplingParams
from rgemma.text.scoring import score_ids

DEFAULT_MAX_GEN_TOKS = 256


@register_model("rgemma")
class RGemmaLM(TemplateLM):
    """model_args: pretrained (a directory, a cached repo id; none: the bundled model), dtype,
    device, quantize, batch_size, max_gen_toks. `loaded` takes a (model, tokenizer) pair."""

    def __init__(
        self,
        pretrained: str | None = None,
        dtype: str | None = None,
        device: str | None = None,
        quantize: str | None = None,
        batch_size: int | str = 16,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        loaded=None,
        **_ignored,
    ):
        super().__init__()
        self.model, self.tokenizer = loaded or load(pretrained, dtype, device, quantize=quantize)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto": 16
        self.max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is read as: BOS (else EOS)."""
        bos = self.tokenizer.bos_id
        return bos if bos is not None else self.tokenizer.eos_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **_) -> list[int]:
        return self.tokenizer.encode(string, add_bos=add_special_tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **_) -> list[tuple[float, bool]]:
        """(log P(continuation | context), greedy?) per (key, context ids, continuation ids)."""
        sequences = [list(context) + list(continuation) for _, context, continuation in requests]
        starts = [len(context) for _, context, _ in requests]
        scored = score_ids(self.model, sequences, starts, batch_size=self.batch_size)
        results = [(s.total, s.is_greedy) for s in scored]
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log P(document): every token after the prefix token, the whole document at once."""
        texts = [req.args[0] for req in requests]
        sequences = [[self.prefix_token_id] + self.tok_encode(t, add_special_tokens=False) for t in texts]
        totals = [s.total for s in score_ids(self.model, sequences, batch_size=self.batch_size)]
        for text, total in zip(texts, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with do_sample) continuations, batched by generation settings."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[repr(sorted(req.args[1].items()))].append(i)
        out: list[str] = [""] * len(requests)
        for index in groups.values():
            config = self._generation_config(requests[index[0]].args[1])
            for b in range(0, len(index), self.batch_size):
                batch = index[b : b + self.batch_size]
                prompts = [self.tok_encode(requests[i].args[0]) for i in batch]
                for i, done in zip(batch, complete(self.model, self.tokenizer, prompts, config)):
                    out[i] = done.text
                    self.cache_hook.add_partial("generate_until", requests[i].args, done.text)
        return out

    def _generation_config(self, kwargs: dict) -> GenerationConfig:
        until = kwargs.get("until") or []
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
        return GenerationConfig(
            max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
            sampling=SamplingParams(temperature=temperature),
            stop=[until] if isinstance(until, str) else list(until),
            seed=kwargs.get("seed"),
        )


def evaluate(
    model: str | None = None,
    tasks: list[str] | tuple[str, ...] = (),
    *,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 16,
    include_path: str | None = None,
    builtin_tasks: bool = True,
    dtype: str | None = None,
    device: str | None = None,
    quantize: str | None = None,
    seed: int = 0,
    gen_kwargs: str | None = None,
    apply_chat_template: bool = False,
    log_samples: bool = False,
    loaded=None,
) -> dict:
    """lm-eval's simple_evaluate on `model` (in process): its results dict. `builtin_tasks=False`
    indexes only `include_path`, not lm-eval's own ~13k task files (20 s saved)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = RGemmaLM(model, dtype, device, quantize, batch_size, loaded=loaded)
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=TaskManager(include_path=include_path, include_defaults=builtin_tasks),
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        gen_kwargs=gen_kwargs,
        apply_chat_template=apply_chat_template,
        log_samples=log_samples,
    )
