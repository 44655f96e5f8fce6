"""`rgemma train`: fine-tune (full or LoRA) or pre-train RecurrentGemma on text or chat data.

    python -m rgemma train --model DIR --data train.jsonl --out runs/ft --steps 1000
    torchrun --nproc-per-node 8 -m rgemma train --model DIR --data train.jsonl --out runs/ft

The flags are TrainConfig's fields (rgemma.cli.train builds them).

Data reading and packing live in data.py. One optimizer step sees `batch_size * grad_accum`
packed rows (the global batch, whatever the number of processes). Under torchrun each process
takes its slice of every micro-batch and the model is sharded with FSDP2 (per residual block,
then the root); the loss is the mean over all target tokens of the global batch, so the run
equals a single-process one up to float rounding.

Parameters and AdamW state are float32; `bf16` autocasts the compute. AdamW skips weight decay
on the RG-LRU parameters, the embedding, biases and norms. The learning rate warms up linearly,
then follows a cosine to zero at `steps`.

A checkpoint is a directory `OUT/checkpoint-STEP`, written atomically: config.json and
model.safetensors (or, with LoRA, the adapter as adapter_model.safetensors and
adapter_config.json in peft's format), the tokenizer files, and `trainer_state.pt` (optimizer,
scheduler, data position, RNG; plain tensors and numbers, read with weights_only=True). Resuming
from one continues the run exactly as if it had not stopped. With LoRA and `merge`, the final
checkpoint also holds the merged full weights, so it loads with `rgemma.load`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rgemma.io.atomic import atomic_directory, remove_stale
from rgemma.io.checkpoint_files import copy_tokenizer, resolve_model_dir
from rgemma.io.files import require_file
from rgemma.models.config import PRESETS, RecurrentGemmaConfig
from rgemma.pretrained.checkpoint import write_checkpoint
from rgemma.pretrained.classes import RecurrentGemmaForCausalLM
from rgemma.text.tokenizer import Tokenizer
from rgemma.training.data import (
    IGNORE,
    Packed,
    global_rows,
    load_examples,
    no_target_reason,
    pack,
    split_heldout,
)

LORA_TARGETS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "linear_x",
    "linear_y",
    "linear_out",
    "gate_proj",
    "up_proj",
    "down_proj",
)
STATE_FILE = "trainer_state.pt"
STATE_KEYS = ("step", "optimizer", "scheduler", "rng", "data")
DATA_KEYS = ("rows_seen", "n_rows", "seq_len", "seed", "lora")
ADAPTER_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's key prefix, so transformers + peft load the adapter
DEFAULT_LR = {"full": 2e-5, "lora": 2e-4, "scratch": 1e-3}
MAX_SEED = 2**64 - 1  # what torch.manual_seed takes
MAX_WARMUP = 100  # steps; the default warmup is a tenth of the run, at most this


def _option(default, help: str, **metadata):
    """A TrainConfig field: its default and its meaning, written once (`rgemma train` builds
    its flags from them; see rgemma.cli.options.dataclass_arguments)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainConfig:
    """Everything a run depends on. Paths may be given as Path; they are kept as str."""

    model_dir: str | None
    data_files: list[str]
    out_dir: str
    steps: int = _option(100, "optimizer steps")
    batch_size: int = _option(8, "rows per micro-batch, over all processes")
    seq_len: int = _option(512, "tokens per row")
    lr: float | None = _option(
        None,
        f"peak learning rate (default {DEFAULT_LR['full']:g} full, {DEFAULT_LR['lora']:g} LoRA, "
        f"{DEFAULT_LR['scratch']:g} from scratch)",
    )
    seed: int = _option(0, "seed of the initialisation, the data order and the held-out split")
    eval_every: int = _option(0, "evaluate every N steps; 0: at the end only")
    metrics: str | None = _option(None, "JSONL metrics, one record per step/eval", metavar="FILE")
    warmup_steps: int | None = _option(
        None, f"linear warmup steps (default: a tenth of --steps, at most {MAX_WARMUP})"
    )
    weight_decay: float = _option(0.1, "AdamW weight decay (none on the RG-LRU, embedding, biases, norms)")
    grad_accum: int = _option(1, "micro-batches per optimizer step")
    clip: float = _option(1.0, "gradient-norm clip; 0: off")
    bf16: bool = _option(False, "bfloat16 autocast (weights stay fp32)")
    grad_checkpointing: bool = _option(False, "recompute each block in the backward pass (less memory)")
    lora: bool = _option(False, "train LoRA adapters only (needs peft)")
    lora_rank: int = _option(8, "LoRA rank")
    lora_alpha: float | None = _option(None, "LoRA alpha (default: twice the rank)")
    merge: bool = _option(False, "with --lora: also write merged full weights in the final checkpoint")
    resume: str | None = _option(
        None, "continue from a checkpoint (or the newest one in a run directory)", metavar="DIR"
    )
    eval_data: list[str] | None = _option(None, "held-out files", metavar="FILE")
    eval_fraction: float = _option(0.0, "hold out this fraction of the documents instead")
    save_every: int = _option(0, "checkpoint every N steps; 0: only at the end")
    progress: bool = _option(True, "no progress bar (log lines instead)", flag="--no-progress")
    init_config: str | None = _option(
        None,
        "train a new model from scratch: config.json file, JSON text, or preset",
        metavar="JSON_OR_PRESET",
    )
    tokenizer: str | None = _option(
        None, "tokenizer directory (default: the model's; required with --init-config)", metavar="DIR"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, PurePath):
                setattr(self, f.name, str(value))
            elif isinstance(value, (list, tuple)):
                setattr(self, f.name, [str(v) for v in value])
        self.eval_data = self.eval_data or None

    def validate(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**64 - 1], got {self.seed}")
        for name in ("eval_every", "save_every", "weight_decay", "clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.data_files:
            raise ValueError("no data files given")
        if self.merge and not self.lora:
            raise ValueError("merge needs lora (there is nothing to merge in full fine-tuning)")
        if self.lora and self.init_config:
            raise ValueError("lora needs pretrained weights; it cannot start from init_config")
        if self.model_dir is None and self.init_config is None and self.resume is None:
            raise ValueError("give a model directory, an init_config, or a checkpoint to resume")
        if self.init_config and self.tokenizer is None and self.resume is None:
            raise ValueError("init_config needs a tokenizer directory (--tokenizer)")

    @property
    def mode(self) -> str:
        return "lora" if self.lora else "scratch" if self.init_config else "full"

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(MAX_WARMUP, self.steps // 10)

    @property
    def alpha(self) -> float:
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank


def train(
    model_dir: str | Path | None, data_files: list[str | Path], out_dir: str | Path, **options
) -> dict[str, Any]:
    """Train and return a summary: losses per step of this call, the last eval, the checkpoint.

    `options` are TrainConfig's fields, where each default and meaning is written. `lr=None`
    picks a rate by mode (DEFAULT_LR); `warmup_steps=None` a tenth of the steps, at most
    MAX_WARMUP; `lora_alpha=None` twice the rank. `eval_every=0` evaluates once at the end
    (when there is held-out data: `eval_data` files, or an `eval_fraction` of the documents);
    `save_every=0` saves only the final checkpoint.
    """
    cfg = TrainConfig(model_dir, list(data_files), out_dir, **options)
    cfg.validate()
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.dist.close()


# --------------------------------------------------------------------------- processes
@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mesh: Any = None
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(x)
        return x

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def init_distributed() -> Dist:
    """Join the torchrun job when WORLD_SIZE > 1: gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    return Dist(dist.get_rank(), dist.get_world_size(), device, mesh, owns)


def shard(model: nn.Module, mesh) -> None:
    """FSDP2: each residual block is one unit, the root (embedding, final norm) another."""
    from torch.distributed.fsdp import fully_shard

    warnings.filterwarnings("ignore", message="FSDP2-wrapped module.*view tensor")
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


# --------------------------------------------------------------------------- model
def parse_init_config(spec: str) -> RecurrentGemmaConfig:
    """A config.json path, an inline JSON object, or a preset name."""
    if Path(spec).expanduser().exists():  # a file, or a directory refused by name
        return RecurrentGemmaConfig.from_json_file(spec)
    if spec.lstrip().startswith("{"):
        return RecurrentGemmaConfig.from_dict(json.loads(spec))
    if spec in PRESETS:
        return RecurrentGemmaConfig.from_preset(spec)
    raise ValueError(
        f"init_config {spec!r} is not a file, a JSON object or a preset ({', '.join(sorted(PRESETS))})"
    )


def new_model(config: RecurrentGemmaConfig, tokenizer: Tokenizer) -> RecurrentGemmaForCausalLM:
    """A fresh model with DeepMind's initialisation; special ids follow the tokenizer."""
    if config.vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"init_config vocab_size {config.vocab_size} is smaller than the "
            f"tokenizer's {tokenizer.vocab_size}"
        )
    config.bos_token_id, config.pad_token_id = tokenizer.bos_id, tokenizer.pad_id
    config.eos_token_id = tokenizer.eos_id
    config.validate()
    return RecurrentGemmaForCausalLM(config)


def add_lora(model: nn.Module, rank: int, alpha: float):
    """Inject peft LoRA adapters into every linear of the blocks; all else is frozen."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError("LoRA needs peft: pip install 'rgemma[train]'") from None

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=list(LORA_TARGETS)
    )
    return inject_adapter_in_model(config, model), config


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters; no decay on the RG-LRU, the embedding, biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "rg_lru" in name or "embed_tokens" in name or "norm" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """The learning rate of update `step` (0-based) over the peak: linear warmup, then cosine."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def loss_sum(model: nn.Module, batch: Packed, device: torch.device) -> torch.Tensor:
    """The summed next-token cross-entropy (float32) of the target tokens of `batch`."""
    logits = model(batch.input_ids.to(device), position_ids=batch.position_ids.to(device)).logits
    labels = batch.labels[:, 1:].to(device)
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum"
    )


def _trainable(rows: Packed, examples: list, files: list[str], what: str = "") -> Packed:
    """`rows`, unless they hold no target token: a run on them would train on nothing."""
    if rows.n_targets() == 0:
        raise ValueError(f"no {what}target tokens in {', '.join(files)}: {no_target_reason(examples)}")
    return rows


# --------------------------------------------------------------------------- the run
class Trainer:
    """One run: the model, optimizer, data and bookkeeping of `train`."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dist = init_distributed()
        if cfg.batch_size % self.dist.world:
            raise ValueError(
                f"batch_size {cfg.batch_size} must be a multiple of the number of "
                f"processes ({self.dist.world})"
            )
        if self.dist.main:
            remove_stale_saves(Path(cfg.out_dir))
        self.ckpt = find_checkpoint(cfg.resume) if cfg.resume else None
        self.saved = read_trainer_state(self.ckpt / STATE_FILE) if self.ckpt else None
        torch.manual_seed(cfg.seed)
        self.tokenizer_dir = Path(cfg.tokenizer or self.ckpt or self._base_dir())
        self.tokenizer = Tokenizer.from_dir(self.tokenizer_dir)
        self.train_rows, self.eval_rows = self._load_data()
        self.model, self.lora_config = self._build_model()
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=cfg.peak_lr, betas=(0.9, 0.95), eps=1e-8
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup, cfg.steps)
        )
        self.step, self.rows_seen = 0, 0
        if self.saved is not None:
            self._restore()
        self.metrics = Metrics(cfg.metrics, self.step, resumed=self.saved is not None, enabled=self.dist.main)

    # ----------------------------------------------------------------- setup
    def _base_dir(self) -> Path:
        base = self.cfg.model_dir or (self.saved or {}).get("base_model")
        if base is None:
            raise ValueError("no model directory: pass --model (or --tokenizer with --init-config)")
        return resolve_model_dir(base)

    def _base_path(self) -> str | None:
        """The base model as an absolute path (recorded so a resume finds it from anywhere)."""
        if self.cfg.model_dir is None and not (self.saved or {}).get("base_model"):
            return None
        return str(self._base_dir().resolve())

    def _load_data(self) -> tuple[Packed, Packed | None]:
        cfg, pad = self.cfg, self.tokenizer.pad_id or 0
        examples = load_examples(cfg.data_files, self.tokenizer)
        held = load_examples(cfg.eval_data, self.tokenizer) if cfg.eval_data else []
        if not cfg.eval_data and cfg.eval_fraction:
            examples, held = split_heldout(examples, cfg.eval_fraction, cfg.seed)
        rows = _trainable(pack(examples, cfg.seq_len, pad), examples, cfg.data_files)
        if held:
            _trainable(pack(held, cfg.seq_len, pad), held, cfg.eval_data or cfg.data_files, "held-out ")
        if cfg.eval_every and not held:
            self.log("no held-out data, so no evaluation: give --eval-data or --eval-fraction")
        self.log(
            f"data: {len(examples)} documents, {len(rows)} rows of {cfg.seq_len} tokens, "
            f"{rows.n_targets()} target tokens" + (f"; held out: {len(held)} documents" if held else "")
        )
        return rows, (pack(held, cfg.seq_len, pad) if held else None)

    def _build_model(self):
        cfg = self.cfg
        if cfg.init_config and self.ckpt is None:
            model = new_model(parse_init_config(cfg.init_config), self.tokenizer)
        else:
            source = self._base_dir() if cfg.lora or self.ckpt is None else self.ckpt
            model = RecurrentGemmaForCausalLM.from_pretrained(source, dtype=torch.float32)
        if model.config.vocab_size < self.tokenizer.vocab_size:
            raise ValueError(
                f"the model's vocabulary ({model.config.vocab_size}) is smaller than "
                f"the tokenizer's ({self.tokenizer.vocab_size})"
            )
        self.base_config = model.config
        lora_config = None
        if cfg.lora:
            model, lora_config = add_lora(model, cfg.lora_rank, cfg.alpha)
            if self.ckpt is not None:
                load_adapter(model, self.ckpt / ADAPTER_FILE)
        if cfg.grad_checkpointing:
            model.gradient_checkpointing_enable()
        model.to(self.dist.device).train()
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.log(
            f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
            f"{n_train / 1e6:.2f}M trained ({cfg.mode}); {self.dist.world} process(es) on "
            f"{self.dist.device.type}"
        )
        if self.dist.world > 1:
            shard(model, self.dist.mesh)
        return model, lora_config

    def _restore(self) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        s, data = self.saved, self.saved["data"]
        for key, now in (
            ("n_rows", len(self.train_rows)),
            ("seq_len", self.cfg.seq_len),
            ("seed", self.cfg.seed),
            ("lora", self.cfg.lora),
        ):
            if data[key] != now:
                raise ValueError(
                    f"cannot resume {self.ckpt}: it was trained with {key}="
                    f"{data[key]}, this run has {now} (same data and settings needed)"
                )
        set_optimizer_state_dict(
            self.model,
            self.optimizer,
            optim_state_dict=s["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        self.scheduler.load_state_dict(s["scheduler"])
        self.step, self.rows_seen = s["step"], data["rows_seen"]
        torch.set_rng_state(s["rng"])
        if self.dist.device.type == "cuda" and "cuda_rng" in s:
            torch.cuda.set_rng_state(s["cuda_rng"])
        self.log(f"resumed from {self.ckpt} at step {self.step}")

    # ----------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Train up to `steps`, evaluating and saving on schedule; return the summary."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            file=sys.stderr,
            disable=not (cfg.progress and self.dist.main),
            dynamic_ncols=True,
        )
        losses, last_eval, checkpoint = [], {}, None
        start_step, t0 = self.step, time.perf_counter()
        while self.step < cfg.steps:
            record = self.train_step()
            losses.append(record["loss"])
            self._report(record, bar)
            final = self.step == cfg.steps
            if self.eval_rows is not None and (final or self._due(cfg.eval_every)):
                last_eval = self.evaluate()
                self.metrics.write(last_eval)
                self.log(
                    f"step {self.step}: eval loss {last_eval['eval_loss']:.4f}, "
                    f"perplexity {last_eval['eval_ppl']:.2f}"
                )
            if final or self._due(cfg.save_every):
                checkpoint = self.save(merge=final and cfg.merge)
        bar.close()
        secs = time.perf_counter() - t0
        tokens = (self.step - start_step) * cfg.batch_size * cfg.grad_accum * cfg.seq_len
        return {
            "steps": self.step,
            "start_step": start_step,
            "losses": losses,
            "final_loss": losses[-1] if losses else None,
            **{k: v for k, v in last_eval.items() if k != "step"},
            "checkpoint": str(checkpoint) if checkpoint else None,
            "tokens": tokens,
            "tokens_per_s": tokens / secs if secs > 0 else 0.0,
        }

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _report(self, record: dict[str, Any], bar) -> None:
        """Metrics line, progress bar; log lines instead when the bar is off."""
        self.metrics.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        every = max(1, self.cfg.steps // 10)
        if not self.cfg.progress and (self.step % every == 0 or self.step == self.cfg.steps):
            self.log(f"step {self.step}: loss {record['loss']:.4f}, {record['tokens_per_s']:.0f} tokens/s")

    def step_rows(self) -> Packed:
        """The rows of the next optimizer step (the global batch, all micro-batches)."""
        n = self.cfg.batch_size * self.cfg.grad_accum
        index = global_rows(self.rows_seen, n, len(self.train_rows), self.cfg.seed)
        return self.train_rows.rows(index)

    def my_slice(self, rows: Packed, micro: int) -> Packed:
        """This process's share of micro-batch `micro`."""
        per = self.cfg.batch_size // self.dist.world
        start = micro * self.cfg.batch_size + self.dist.rank * per
        return rows.rows(slice(start, start + per))

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over the global batch; the loss is the global token mean."""
        cfg, dev = self.cfg, self.dist.device
        t0 = time.perf_counter()
        rows = self.step_rows()
        n_targets = max(1, rows.n_targets())  # every process holds every row: no exchange
        total = torch.zeros((), device=dev)
        for micro in range(cfg.grad_accum):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = loss_sum(self.model, self.my_slice(rows, micro), dev)
            # FSDP averages gradients over processes; scaling by their number makes it a sum.
            (loss * (self.dist.world / n_targets)).backward()
            total += loss.detach()
        grad_norm = clip_gradients(self.model, cfg.clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.rows_seen += len(rows)
        loss_value = float(self.dist.all_sum(total)) / n_targets
        secs = time.perf_counter() - t0
        return {
            "step": self.step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": len(rows) * cfg.seq_len / secs,
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Mean loss and perplexity over every held-out target token."""
        cfg, dev, rows = self.cfg, self.dist.device, self.eval_rows
        per = cfg.batch_size // self.dist.world
        total = torch.zeros((), device=dev, dtype=torch.float64)
        self.model.eval()
        for start in range(0, len(rows), cfg.batch_size):
            # Every process runs the same number of forwards (FSDP gathers in each); rows past
            # the end are stand-ins with no targets.
            index = torch.arange(start + self.dist.rank * per, start + (self.dist.rank + 1) * per)
            part = rows.rows(index.clamp(max=len(rows) - 1))
            part.labels[index >= len(rows)] = IGNORE
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                total += loss_sum(self.model, part, dev).double()
        self.model.train()
        loss = float(self.dist.all_sum(total)) / max(1, rows.n_targets())
        return {"step": self.step, "eval_loss": loss, "eval_ppl": math.exp(min(loss, 700.0))}

    # ----------------------------------------------------------------- checkpoints
    def save(self, merge: bool = False) -> Path:
        """Write OUT/checkpoint-STEP atomically (every process takes part; rank 0 writes)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(self.model, options=options)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        path = Path(self.cfg.out_dir) / f"checkpoint-{self.step}"
        if self.dist.main:
            with atomic_directory(path, keep_existing=False) as tmp:
                self._write_weights(tmp, weights, merge)
                copy_tokenizer(self.tokenizer_dir, tmp)
                torch.save(self._trainer_state(optim), tmp / STATE_FILE)
            self.log(f"saved {path}")
        self.dist.barrier()
        return path

    def _write_weights(self, tmp: Path, weights: dict[str, torch.Tensor], merge: bool) -> None:
        if self.cfg.lora:
            write_adapter(tmp, weights, self.lora_config, self.cfg.model_dir or self._base_path())
            if not merge:
                return
            weights = merged_weights(weights, self.cfg.alpha / self.cfg.lora_rank)
        write_checkpoint(tmp, weights, self.base_config)

    def _trainer_state(self, optim: dict) -> dict[str, Any]:
        state = {
            "step": self.step,
            "optimizer": optim,
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "data": {
                "rows_seen": self.rows_seen,
                "n_rows": len(self.train_rows),
                "seq_len": self.cfg.seq_len,
                "seed": self.cfg.seed,
                "lora": self.cfg.lora,
            },
            "base_model": self._base_path(),
        }
        if self.dist.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def log(self, message: str) -> None:
        if self.dist.main:
            from tqdm.auto import tqdm

            tqdm.write(f"rgemma train: {message}", file=sys.stderr)


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm (0: do not clip); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
        norm = norm.full_tensor()
    return float(norm)


# --------------------------------------------------------------------------- files
def read_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.pt, read with weights_only=True (tensors and plain values:
    a pickle that would import anything else is refused, never run); a damaged file is a
    ValueError of one line."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it reads fine
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        name = re.search(r"GLOBAL (\S+)", str(err))
        if name:
            raise ValueError(
                f"refusing {path}: it would import {name.group(1)}, which a trainer state never "
                "holds (it could run code); it was not written by rgemma train"
            ) from None
        raise ValueError(f"cannot read {path}: damaged, or not a trainer state") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, OSError) as err:  # truncated, or not a torch file at all
        reason = str(err).split(". ")[0].strip() or "it is empty"
        raise ValueError(f"cannot read {path}: damaged or truncated ({reason})") from None
    except Exception as err:  # garbage read as an old-style pickle: KeyError, IndexError, ...
        kind = type(err).__name__
        raise ValueError(f"cannot read {path}: damaged, or not a trainer state ({kind})") from None
    _check_trainer_state(state, path)
    return state


def _check_trainer_state(state: Any, path: Path) -> None:
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a trainer state of rgemma train (not a dict)")
    data = state.get("data")
    missing = [k for k in STATE_KEYS if k not in state]
    missing += [f"data.{k}" for k in DATA_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a trainer state of rgemma train (no {', '.join(missing)})")


def remove_stale_saves(out_dir: Path) -> None:
    """Remove the temp checkpoints (`.checkpoint-N.tmp-PID-...`) of runs killed mid-save, for
    any N: the atomic writer clears a name's leftovers only when that name is written again."""
    for tmp in out_dir.glob(".checkpoint-*.tmp-*"):
        remove_stale(out_dir / tmp.name[1:].split(".tmp-")[0])


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the newest `checkpoint-STEP` inside a run directory."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    found = [
        p for p in path.glob("checkpoint-*") if (p / STATE_FILE).is_file() and p.name.split("-")[-1].isdigit()
    ]
    if not found:
        raise FileNotFoundError(f"no checkpoint to resume in {path} (expected {STATE_FILE})")
    return max(found, key=lambda p: int(p.name.split("-")[-1]))


def write_adapter(out: Path, weights: dict[str, torch.Tensor], lora_config, base: str) -> None:
    """The LoRA weights in peft's file format (loadable with transformers + peft too)."""
    from safetensors.torch import save_file

    adapter = {
        PEFT_PREFIX + k.replace(".default.", "."): v.contiguous() for k, v in weights.items() if ".lora_" in k
    }
    save_file(adapter, str(out / ADAPTER_FILE), metadata={"format": "pt"})
    lora_config.base_model_name_or_path = str(base)
    lora_config.save_pretrained(str(out))


def load_adapter(model: nn.Module, path: Path) -> None:
    """Read adapter weights written by `write_adapter` into a model with LoRA injected."""
    from safetensors.torch import load_file

    require_file(path, "LoRA adapter file")
    weights = {
        k.removeprefix(PEFT_PREFIX)
        .replace(".lora_A.", ".lora_A.default.")
        .replace(".lora_B.", ".lora_B.default."): v
        for k, v in load_file(path).items()
    }
    expected = {k for k in model.state_dict() if ".lora_" in k}
    if set(weights) != expected:
        raise ValueError(f"{path} does not match the model's LoRA layers (rank, targets?)")
    model.load_state_dict(weights, strict=False)


def merged_weights(weights: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Plain model weights with each LoRA update folded in: W + scale * B @ A."""
    out = {}
    for key, value in weights.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            stem = key.split(".base_layer.")[0]
            key = key.replace(".base_layer.", ".")
            if key.endswith(".weight"):
                a = weights[f"{stem}.lora_A.default.weight"].float()
                b = weights[f"{stem}.lora_B.default.weight"].float()
                value = (value.float() + scale * (b @ a)).to(value.dtype)
        out[key] = value
    return out


class Metrics:
    """JSONL metrics, one record a line, written by rank 0. On resume, records past the
    checkpoint's step (written before an interruption) are dropped."""

    def __init__(self, path: str | None, step: int, resumed: bool, enabled: bool):
        self.path = Path(path) if path and enabled else None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resumed and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
