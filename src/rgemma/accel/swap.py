"""The one way rgemma.accel changes what a model runs: a module is put in its parent's place by
another module made of the same parts (`adopt`), or an attribute the model declares for the
purpose is set (RGLRU.scan, LocalAttention.attend, Int8Linear.kernel). Both are per instance,
so two models in one process can differ; `rebuild` walks a model and does the putting."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def adopt(module: nn.Module, cls: type, drop: tuple[str, ...] = ()) -> nn.Module:
    """A new `cls` instance holding `module`'s attributes, parameters, buffers and submodules
    (the very objects: nothing is copied, tied weights stay tied, state_dict keys stay), less
    the names in `drop`. Hooks are not carried over."""
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    own = set(vars(new))
    for key, value in vars(module).items():
        if key not in own and key not in drop:
            new.__dict__[key] = value  # plain attributes: sizes, kind, scan, ...
    for store in ("_parameters", "_buffers", "_modules"):
        kept = {k: v for k, v in getattr(module, store).items() if k not in drop}
        getattr(new, store).update(kept)
    new._non_persistent_buffers_set.update(module._non_persistent_buffers_set - set(drop))
    new.train(module.training)
    return new


def rebuild(module: nn.Module, replace: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Children first, then `module` itself: each goes through `replace`, and a module it
    returns in place of the old one takes the old one's place in its parent. Returns what
    `module` became (a new object only when it was itself replaced)."""
    for name, child in list(module.named_children()):
        new = rebuild(child, replace)
        if new is not child:
            setattr(module, name, new)
    return replace(module)
