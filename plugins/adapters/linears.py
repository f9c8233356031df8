"""The weights a projection of another library's attention module really computes with.

An adapter must never read ``module.to_q.weight`` from something that is not a plain
``nn.Linear``: a PEFT LoRA layer (``peft.tuners.lora.layer.Linear``) adds
``scaling * B @ A`` to its base layer's weight, and reading the base weight alone drops
the adapter in silence. :func:`effective` returns the weight and bias the projection
computes with (a plain ``nn.Linear``: its own; vanilla LoRA, unmerged: the base weight
plus every active adapter's delta, merged: the base weight), with a note saying what
was merged, or the reason it cannot be carried (DoRA and other LoRA variants, a LoRA
bias, disabled-but-merged adapters, any other ``nn.Linear`` subclass or wrapper with
its own ``forward``). Nothing of peft is imported: the layer is read by its attributes.
"""

from __future__ import annotations

from torch import Tensor, nn


def linear_like(module: object) -> bool:
    """A plain ``nn.Linear``, an ``nn.Linear`` subclass, or a wrapper with an ``nn.Linear`` ``base_layer``."""
    return isinstance(module, nn.Linear) or isinstance(getattr(module, "base_layer", None), nn.Linear)


def _is_peft_lora(module: object) -> bool:
    return (type(module).__module__.startswith("peft.tuners.lora")
            and all(hasattr(module, a) for a in ("lora_A", "lora_B", "get_delta_weight", "active_adapters", "merged")))


def effective(name: str, module: nn.Module) -> tuple[Tensor | None, Tensor | None, str | None, str | None]:
    """``(weight, bias, note, problem)`` of the projection ``name`` (``problem`` set: not carried)."""
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    if type(module) is nn.Linear or (isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward):
        return module.weight, module.bias, None, None
    if not _is_peft_lora(module):
        return None, None, None, (f"{name} is a {kind}, not a plain torch.nn.Linear: its computation is not "
                                  f"only its weight and bias, so carrying them would drop the rest")
    base = module.base_layer
    active = [a for a in module.active_adapters if a in module.lora_A]
    variants = [a for a in active if a in getattr(module, "lora_variant", {})]
    biased = [a for a in active if getattr(module, "lora_bias", {}).get(a)]
    if variants or biased:
        what = "DoRA or another LoRA variant" if variants else "a LoRA bias"
        return None, None, None, (f"{name} carries PEFT LoRA adapter(s) {variants or biased} with {what}, which "
                                  f"zoo.swap cannot fold into one weight: merge and unload them first "
                                  f"(PeftModel.merge_and_unload())")
    if module.disable_adapters:
        if module.merged:
            return None, None, None, (f"{name}: PEFT LoRA adapters are disabled but merged into the weight: "
                                      f"unmerge them (or merge_and_unload()) before swapping")
        return base.weight, base.bias, f"{name}: PEFT LoRA adapters are disabled: the base weight is carried", None
    if module.merged:
        return base.weight, base.bias, (f"{name}: PEFT LoRA adapter(s) {list(module.merged_adapters)} were merged "
                                        f"into the weight, which is carried"), None
    if not active:
        return base.weight, base.bias, None, None
    weight = base.weight.detach().clone()
    for a in active:
        weight += module.get_delta_weight(a).detach().to(weight.dtype)
    dropout = [f"{a}: p={module.lora_dropout[a].p}" for a in active
               if isinstance(module.lora_dropout[a], nn.Dropout) and module.lora_dropout[a].p]
    note = (f"{name}: PEFT LoRA adapter(s) {active} merged into the carried weight (scale * B @ A); the zoo layer "
            f"has a plain weight, so train it directly" + (f"; LoRA dropout ({', '.join(dropout)}) is not "
                                                           f"reproduced" if dropout else ""))
    return weight, base.bias, note, None


def weights_of(pairs: dict[str, tuple[str, nn.Module]],
               zero_bias: bool = False) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """``(weights under the zoo's names, notes, problems)`` for ``{zoo name: (label, projection)}``
    (the label, e.g. ``"encoder.layer.0.attention.self.query"``, names it in messages).

    ``zero_bias``: a projection without a bias gets a zero one (the zoo's ``bias`` flag
    is shared by q, k and v), except ``to_out.0``."""
    import torch

    weights: dict[str, Tensor] = {}
    notes, problems = [], []
    for name, (label, lin) in pairs.items():
        weight, bias, note, problem = effective(label, lin)
        if problem:
            problems.append(problem)
            continue
        if note:
            notes.append(note)
        weights[f"{name}.weight"] = weight
        if bias is not None:
            weights[f"{name}.bias"] = bias
        elif zero_bias and name != "to_out.0":  # e.g. Whisper's k_proj: the zoo's shared flag, zero bias
            weights[f"{name}.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return weights, notes, problems
