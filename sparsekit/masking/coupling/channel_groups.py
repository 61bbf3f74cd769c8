"""Group-aware channel selection: output channels that are coupled are kept or removed together.

A channel of a residual stream (stem conv, every block's last conv, projection shortcuts) or of a
concat/depthwise coupling is only physically removable when it is masked in EVERY coupled layer
(this module owns that discovery; sparsekit/formats/structured.py uses it). Ranking each layer on
its own almost never masks such a channel everywhere, so ``--granularity channel`` ranks *units*: sets of (weight, row) pairs that
Torch-Pruning's dependency graph couples, each scored by the mean of its members' per-layer
normalized channel scores. Layers without couplings form one-row units (the old behaviour).

The final classifier (the layer whose output is the model output) is never a candidate: its output
rows are the classes. Its input columns still shrink with the channels removed upstream.

Channels masked this way are only truly dead if what follows them is zero too: a BatchNorm after a
masked conv emits its shift ``beta`` and a layer bias emits itself. ``dead_channel_extras`` lists
those parameters so the pipeline can hold them at zero during fine-tuning (training only; the saved
mask stays over the prunable weights).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.errors import UsageError
from sparsekit.masking.select.topk import budget_keep

log = logging.getLogger("sparsekit")

#: layer types whose output channels are removal roots (here and in formats/structured)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
Row = tuple[str, int]  # (weight FQN, output row)


@dataclass
class ChannelUnits:
    """The channel decisions of one model.

    Attributes:
        units: each unit lists the (weight FQN, output row) pairs removed together.
        families: per unit, the index of its coupling family (layers linked by any coupling); the
            layerwise budget is applied per family.
        fixed: prunable weights whose output rows are never removed (the classifier).
        partial: channel sets left out of ``units`` because the structured format cannot remove
            them: coupled to a non-prunable layer, or to a grouped conv in a way that would leave
            its groups unequal (``conv_group_constraints``). Their rows are never masked, so what a
            search counts as removed is what the converter removes.
        coupled: True when the dependency graph was available.
    """

    units: list[list[Row]]
    families: list[int]
    fixed: list[str]
    partial: int = 0
    coupled: bool = True
    #: the dependency-graph groups they were built from (``coupled_channel_groups``; [] if untraceable)
    groups: list[dict[str, Any]] = field(default_factory=list)
    #: why the dependency graph could not be traced ("" when ``coupled``)
    untraced: str = ""


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]  # path halving
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def mixes_channels(mod: nn.Module) -> bool:
    """A normalization whose statistics span the channel dimension (LayerNorm over channels, as in
    ConvNeXt and transformer streams; GroupNorm with fewer groups than channels): a zero channel
    still enters the others' mean and variance, so removing it changes the function. Channels coupled
    to one are never removed (the search leaves them out, the structured converter keeps them)."""
    if isinstance(mod, nn.LayerNorm):
        return True
    return isinstance(mod, nn.GroupNorm) and mod.num_groups != mod.num_channels


def grouped_convs(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """``{weight FQN: (groups, input channels per group, output channels per group)}`` of every conv
    with groups > 1 that is not depthwise (a depthwise conv's input channel is its own output, which
    the dependency graph couples already)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not m.groups == m.in_channels == m.out_channels:
            out[f"{name}.weight" if name else "weight"] = (m.groups, m.in_channels // m.groups, m.out_channels // m.groups)
    return out


def conv_group_constraints(
    n_root: int, touches: list[tuple[str, str, list[tuple[int, int]]]], convs: dict[str, tuple[int, int, int]],
) -> tuple[list[list[int]], set[int]]:
    """Which root channels of one dependency group must go together so every grouped conv stays valid.

    A conv with G groups keeps G equally wide groups only if each group loses the same channels: the
    same local offsets (position % width per group) in every group. Torch-Pruning slices a grouped
    conv's input by keeping the first kept offsets of group 0 for every group, which is exact for
    such removals and wrong otherwise. So root channels that touch the same (conv, side, offset)
    are one removal class, and an offset this group does not reach in every conv group cannot be
    removed at all (its root channels are ``blocked``).

    Args:
        n_root: root channels of the dependency group.
        touches: ``(weight FQN, "out" | "in", [(root index, row or column), ...])`` per grouped conv
            the group reaches (output rows or input columns).
        convs: ``grouped_convs(model)``.

    Returns:
        (classes of root indices removed together, only those with more than one member; blocked
        root indices).
    """
    uf = _UnionFind()
    blocked: set[int] = set()
    for fqn, side, pairs in touches:
        groups, in_pg, out_pg = convs[fqn]
        width = in_pg if side == "in" else out_pg
        by_offset: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for root, pos in pairs:
            by_offset[pos % width].append((root, pos // width))
        for roots_groups in by_offset.values():
            roots = sorted({r for r, _ in roots_groups})
            if len({g for _, g in roots_groups}) < groups:
                blocked.update(roots)
            for r in roots[1:]:
                uf.union(roots[0], r)
    classes: dict[int, list[int]] = defaultdict(list)
    for r in range(n_root):
        if r in uf.parent:
            classes[uf.find(r)].append(r)
    merged = [c for c in classes.values() if len(c) > 1]
    for c in merged:  # a class with one blocked member is blocked whole
        if blocked.intersection(c):
            blocked.update(c)
    return merged, blocked


def _group_touches(g: dict[str, Any], convs: dict[str, tuple[int, int, int]]) -> list[tuple[str, str, list[tuple[int, int]]]]:
    """``conv_group_constraints`` touches of one ``coupled_channel_groups`` entry."""
    touches = []
    for m in g["members"]:
        if m["weight"] in convs:
            touches.append((m["weight"], "out", [(j, r) for j, r in enumerate(m["rows"]) if r >= 0]))
    for item in g.get("inputs", []):
        if item["weight"] in convs:
            touches.append((item["weight"], "in", [(j, c) for j, cols in enumerate(item["cols"]) for c in cols]))
    return touches


def _example(model: nn.Module, in_shape: tuple[int, ...]) -> torch.Tensor:
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    return torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(0)).to(device)


def channel_units(model: nn.Module, names: list[str], in_shape: tuple[int, ...]) -> ChannelUnits:
    """Find the channel units of ``model`` restricted to the prunable weights ``names``.

    Uses ``coupled_channel_groups`` (Torch-Pruning's dependency graph), so the units are exactly the
    groups the structured converter removes. The model's train/eval mode is restored afterwards.

    Args:
        model: the network (not modified; traced in eval mode).
        names: prunable weight FQNs.
        in_shape: one input sample's shape, e.g. (C, H, W).

    Returns:
        the units, in the order of their first row in ``names`` (deterministic tie-breaks).
    """
    params = dict(model.named_parameters())
    widths = {n: params[n].shape[0] for n in names}
    example = _example(model, in_shape)
    was_training = model.training
    untraced = ""
    try:
        mod_names = {m: n for n, m in model.named_modules()}
        fixed = [f"{mod_names[m]}.weight" for m in _ignored_output_layers(model.eval(), example)]
        groups = coupled_channel_groups(model, example)
        coupled = True
    except Exception as exc:  # noqa: BLE001 - an untraceable user model still gets per-layer channels
        log.warning("channel couplings unavailable (%s: %s); ranking every layer on its own",
                    type(exc).__name__, exc)
        fixed, groups, coupled = [], [], False
        untraced = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    finally:
        model.train(was_training)
    fixed = [n for n in fixed if n in widths]
    prunable = set(widths) - set(fixed)

    convs = grouped_convs(model)
    rows_uf, layers_uf = _UnionFind(), _UnionFind()
    blocked_rows: set[Row] = set()  # rows the structured converter cannot remove: never a unit
    for g in groups:
        members = [m for m in g["members"] if m["weight"] in prunable]
        # a member outside the prunable set, or a channel-mixing norm (LayerNorm): not removable
        outside = len(members) < len(g["members"]) or bool(g.get("normalized_by"))
        per_root = [[(m["weight"], m["rows"][j]) for m in members if m["rows"][j] >= 0] for j in range(g["channels"])]
        classes, blocked = conv_group_constraints(g["channels"], _group_touches(g, convs), convs)
        for c in classes:  # the same offset of every conv group goes together
            for j in c[1:]:
                per_root[c[0]] += per_root[j]
                per_root[j] = []
        for j, rows in enumerate(per_root):
            for r in rows[1:]:
                rows_uf.union(rows[0], r)
                layers_uf.union(rows[0][0], r[0])
            if outside or j in blocked:
                blocked_rows.update(rows)
    by_root: dict[Row, list[Row]] = defaultdict(list)
    for n in names:
        if n in prunable:
            for r in range(widths[n]):
                by_root[rows_uf.find((n, r))].append((n, r))
    units, left = [], 0
    for u in by_root.values():  # dict order = first row in module order
        if any(r in blocked_rows for r in u):
            left += 1
        else:
            units.append(u)
    family_ids: dict[str, int] = {}
    families = [family_ids.setdefault(layers_uf.find(u[0][0]), len(family_ids)) for u in units]
    return ChannelUnits(units, families, fixed, left, coupled, groups, untraced)


def normalized_channel_scores(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per output channel mean |score|, divided by the layer's mean channel score.

    The division makes layers with different fan-in comparable (|w| shrinks with fan-in under the
    usual inits). Non-finite channel scores (e.g. -inf markers of earlier pruning, made +inf by the
    absolute value) are left as they are and excluded from the layer mean.
    """
    out = {}
    for n, s in scores.items():
        flat = s.detach().double().cpu().reshape(s.shape[0], -1)  # (out, fan_in)
        flat = torch.where(torch.isneginf(flat), torch.zeros_like(flat), flat)  # -inf = already pruned: no weight
        ch = flat.abs().mean(1)
        if torch.isnan(ch).any():
            raise UsageError(f"scores of {n} contain NaN; cannot select a mask")
        finite = ch[torch.isfinite(ch)]
        scale = float(finite.mean()) if finite.numel() else 1.0
        out[n] = ch / scale if scale > 0 else ch
    return out


def select_units(
    ch_scores: dict[str, torch.Tensor], units: ChannelUnits, sparsity: float, layerwise: bool,
    multiple: int = 1,
) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
    """Remove the lowest-scored units until the removed channel count is as close as possible to
    ``sparsity`` of the candidate channels (per coupling family when ``layerwise``).

    With ``layerwise`` and ``multiple > 1``, a family whose units all have the same size keeps a number
    of units rounded to the nearest multiple of ``multiple`` (at least ``multiple``): CPU GEMM kernels
    run widths like 16 or 32 much faster than 15 or 31 (docs/benchmarks.md, deployment section).

    A unit's score is the mean of its rows' scores (higher = keep). Units are visited from the lowest
    score; one is skipped when it would overshoot the budget by more than it leaves, or would remove
    the last channel of any layer. Ties keep the earlier unit (stable sort).

    Returns:
        ``({fqn: bool (out,) keep}, stats)``; fixed (classifier) weights are all True.
    """
    keep = {n: torch.ones(s.shape[0], dtype=torch.bool) for n, s in ch_scores.items()}
    alive = {n: s.shape[0] for n, s in ch_scores.items()}
    unit_score = [sum(float(ch_scores[n][r]) for n, r in u) / len(u) for u in units.units]
    scopes: dict[int, list[int]] = defaultdict(list)
    for i, fam in enumerate(units.families):
        scopes[fam if layerwise else 0].append(i)
    total = removed_all = 0
    for members in scopes.values():
        size = sum(len(units.units[i]) for i in members)
        target = size - budget_keep(size, sparsity)
        sizes = {len(units.units[i]) for i in members}
        if layerwise and multiple > 1 and len(sizes) == 1 and len(members) > multiple:
            width, unit = len(members), sizes.pop()
            kept = width - (width - budget_keep(width, sparsity))
            kept = min(width, max(multiple, round(kept / multiple) * multiple))
            target = (width - kept) * unit
        removed = 0
        for i in sorted(members, key=lambda i: unit_score[i]):  # stable: ties keep module order
            if removed >= target:
                break
            u = units.units[i]
            if removed + len(u) - target >= target - removed:  # overshoot not smaller than the gap
                continue
            per_layer: dict[str, int] = defaultdict(int)
            for n, _ in u:
                per_layer[n] += 1
            if any(alive[n] - c < 1 for n, c in per_layer.items()):  # never cut a layer completely
                continue
            for n, r in u:
                keep[n][r] = False
            for n, c in per_layer.items():
                alive[n] -= c
            removed += len(u)
        total += size
        removed_all += removed
    stats = {"channels": total, "channels_removed": removed_all,
             "channel_sparsity": removed_all / total if total else 0.0}
    return keep, stats


def layer_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(Conv/Linear, BatchNorm) pairs where the BN directly consumes the layer's output.

    Found with forward hooks on one eval-mode forward of ``example`` (eval: the probe must not
    touch BN running statistics).
    """
    # the output tensor is kept alive with its producer: a freed tensor's id() is reused by later
    # tensors (DenseNet's concatenations), which would pair a BN with an unrelated layer
    producer: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def on_layer(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        producer[id(out)] = (mod, out)

    def on_bn(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        hit = producer.get(id(inp[0]))
        if hit is not None and hit[1] is inp[0]:
            pairs.append((hit[0], mod))

    hooks = [m.register_forward_hook(on_layer) for m in model.modules() if isinstance(m, _LAYERS)]
    hooks += [m.register_forward_hook(on_bn) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    probe_forward(model, example, hooks)
    return pairs


def probe_forward(model: nn.Module, example: torch.Tensor, hooks: list) -> None:
    """One no-grad eval-mode forward of ``example`` for the registered ``hooks`` (removed afterwards;
    eval so the probe never touches BN running statistics; the train/eval mode is restored)."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def dead_channel_extras(model: nn.Module, mask: Mask, in_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Keep-masks for the parameters that would make fully masked output channels emit a constant.

    For every Conv/Linear whose output row is fully masked in ``mask``: its bias entry, and the weight
    and bias (gamma, beta) of the BatchNorm that directly consumes its output (found with forward
    hooks, like the structured converter's BN repair). Holding them at zero makes the channel output
    exactly 0, so the structured format can remove it even after a pretrained rewind point.

    Returns:
        ``{param FQN: bool keep}`` for the parameters with at least one dead entry.
    """
    names = {m: n for n, m in model.named_modules()}
    pairs = layer_bn_pairs(model, _example(model, in_shape))
    extras: dict[str, torch.Tensor] = {}

    def add(fqn: str, keep: torch.Tensor) -> None:
        if not keep.all():
            extras[fqn] = keep & extras[fqn] if fqn in extras else keep.clone()

    for mod in model.modules():
        fqn = f"{names[mod]}.weight"
        if isinstance(mod, _LAYERS) and fqn in mask.names and getattr(mod, "bias", None) is not None:
            m = mask[fqn]
            add(f"{names[mod]}.bias", m.reshape(m.shape[0], -1).any(1))
    for layer, bn in pairs:
        fqn = f"{names[layer]}.weight"
        if fqn not in mask.names or bn.weight is None:
            continue
        m = mask[fqn]
        alive = m.reshape(m.shape[0], -1).any(1)
        if alive.shape[0] == bn.weight.shape[0]:
            add(f"{names[bn]}.weight", alive)
            add(f"{names[bn]}.bias", alive)
    return extras


def training_mask(model: nn.Module, mask: Mask, in_shape: tuple[int, ...]) -> Mask:
    """``mask`` plus ``dead_channel_extras``: the mask to hold during channel-ticket fine-tuning."""
    extras = dead_channel_extras(model, mask, in_shape)
    return Mask({**mask.to_dict(), **extras}) if extras else mask


def _ignored_output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Leaf modules whose output tensor IS the model output (classifier heads)."""
    outs: dict[int, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: outs.__setitem__(id(o), mod))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            y = model(example)
    finally:
        for h in hooks:
            h.remove()
    return [outs[id(y)]] if id(y) in outs else []


def _graph(model: nn.Module, example: torch.Tensor) -> Any:
    """Torch-Pruning's dependency graph; it traces through autograd, so grad mode is forced on (a
    caller inside ``torch.no_grad()``, e.g. a search's final selection, would get an AssertionError)
    and frozen parameters are traced as trainable."""
    import torch_pruning as tp

    # a frozen model (strong-ticket searches freeze every parameter) leaves no autograd graph to
    # trace, so parameters are made trainable for the trace and restored after it
    frozen = [p for p in model.parameters() if not p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example[:2])
    finally:
        for p in frozen:
            p.requires_grad_(False)


def coupled_channel_groups(model: nn.Module, example: torch.Tensor) -> list[dict[str, Any]]:
    """Which output channels of which weights must be removed together (for group-aware selection).

    A channel-granularity search that scores and masks whole groups (e.g. summing per-member channel
    scores by root index) produces masks the structured format can remove completely, including the
    residual stream; ranking every layer on its own almost never masks a stream channel everywhere.

    Returns:
        ``[{"root": layer, "channels": C, "members": [{"weight": fqn, "rows": [row per root index]}],
        "inputs": [{"weight": fqn, "cols": [[input columns] per root index]}], "normalized_by": module FQN
        or None}]``; ``rows[j]`` is the member's output row coupled to root channel ``j``, ``cols[j]``
        the input columns of a consumer layer that read it (several after a flatten);
        ``normalized_by`` names a ``mixes_channels`` norm in the group (its channels are not removable).

    Example:
        >>> groups = coupled_channel_groups(resnet20, torch.randn(2, 3, 32, 32))  # doctest: +SKIP
        >>> [m["weight"] for m in groups[0]["members"]]  # doctest: +SKIP
        ['conv1.weight', 'blocks.0.conv2.weight', 'blocks.1.conv2.weight', 'blocks.2.conv2.weight']
    """
    from sparsekit.memory_guard import memory_limited

    # torch-pruning's trace grows without bound on some models (tv:swin_t: OOM-killed at 24 GB)
    with memory_limited("tracing the channel couplings of this model (torch-pruning)",
                        "use --granularity weight for it"):
        return _coupled_groups(model, example)


def _coupled_groups(model: nn.Module, example: torch.Tensor) -> list[dict[str, Any]]:
    from sparsekit.progress import track

    model.eval()
    names = {m: n for n, m in model.named_modules()}
    dg = _graph(model, example)
    out = []
    groups = dg.get_all_groups(ignored_layers=_ignored_output_layers(model, example), root_module_types=_LAYERS)
    # torch-pruning traces each group in Python: minutes on attention models (swin_t), so say how far it is
    for group in track(groups, None, "tracing channel couplings, groups found"):
        root = group[0].dep.target.module
        n_root = dg.get_pruner_of_module(root).get_out_channels(root)
        members, inputs, norm = [], [], None
        for item in group.items:
            mod = item.dep.target.module
            if norm is None and mixes_channels(mod):
                norm = names[mod]
            if not isinstance(mod, _LAYERS):
                continue
            if dg.is_out_channel_pruning_fn(item.dep.handler):
                rows = [-1] * n_root
                for i, r in zip(item.idxs, item.root_idxs, strict=True):
                    rows[r] = int(i)
                members.append({"weight": f"{names[mod]}.weight", "rows": rows})
            else:  # input columns: several per root channel after a flatten (C*H*W features)
                cols: list[list[int]] = [[] for _ in range(n_root)]
                for i, r in zip(item.idxs, item.root_idxs, strict=True):
                    cols[r].append(int(i))
                inputs.append({"weight": f"{names[mod]}.weight", "cols": cols})
        out.append({"root": names[root], "channels": n_root, "members": members, "inputs": inputs,
                    "normalized_by": norm})
    return out
