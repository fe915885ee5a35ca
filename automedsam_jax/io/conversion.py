"""The PyTorch ⇄ Flax conversion table for SAM-family models.

Every Flax leaf has exactly one PyTorch name: the module path joined by dots (``nnx.List`` and
``Sequential`` indices kept) plus the PyTorch leaf name. The rules below map a Flax leaf to that
name and to the array transform, by the type of the module that owns it:

==================  ============================  ==========================================
Flax module         Flax leaf → PyTorch leaf      array transform (PyTorch → Flax)
==================  ============================  ==========================================
``nnx.Linear``      kernel → weight, bias         (out, in) → (in, out)
``nnx.Conv``        kernel → weight, bias         (O, I, kh, kw) → (kh, kw, I, O)
``nnx.ConvTranspose``  kernel → weight, bias      (I, O, kh, kw) → (kh, kw, I, O), flipped in kh, kw
``nnx.LayerNorm``   scale → weight, bias          —
``nnx.BatchNorm``   scale → weight, bias, mean → running_mean, var → running_var,
                    num_batches_tracked           —
``nnx.Embed``       embedding → weight            —
any other module    same name (pos_embed, rel_pos_h/w, attention_biases, the Gaussian PE buffer)
==================  ============================  ==========================================

A checkpoint must match the table exactly: missing, unexpected and mis-shaped tensors are all
collected into one :class:`CheckpointMismatch`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..core.config import SAM_PRESETS, SamConfig
from ..core.init import abstract_model
from ..core.modeling import Sam

Array = np.ndarray


def _linear_in(w): return w.T
def _linear_out(k): return k.T
def _conv_in(w): return w.transpose(2, 3, 1, 0)
def _conv_out(k): return k.transpose(3, 2, 0, 1)
def _convT_in(w): return w.transpose(2, 3, 0, 1)[::-1, ::-1]
def _convT_out(k): return k[::-1, ::-1].transpose(2, 3, 0, 1)
def _same(x): return x


# (Flax module type, Flax leaf) → (PyTorch leaf, PyTorch→Flax, Flax→PyTorch). Order matters only
# for subclasses: ConvTranspose is checked before Conv.
RULES: list[tuple[type, str, str, Callable, Callable]] = [
    (nnx.Linear, "kernel", "weight", _linear_in, _linear_out),
    (nnx.Linear, "bias", "bias", _same, _same),
    (nnx.ConvTranspose, "kernel", "weight", _convT_in, _convT_out),
    (nnx.ConvTranspose, "bias", "bias", _same, _same),
    (nnx.Conv, "kernel", "weight", _conv_in, _conv_out),
    (nnx.Conv, "bias", "bias", _same, _same),
    (nnx.LayerNorm, "scale", "weight", _same, _same),
    (nnx.LayerNorm, "bias", "bias", _same, _same),
    (nnx.BatchNorm, "scale", "weight", _same, _same),
    (nnx.BatchNorm, "bias", "bias", _same, _same),
    (nnx.BatchNorm, "mean", "running_mean", _same, _same),
    (nnx.BatchNorm, "var", "running_var", _same, _same),
    (nnx.BatchNorm, "num_batches_tracked", "num_batches_tracked", _same, _same),
    (nnx.Embed, "embedding", "weight", _same, _same),
]


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One tensor: its Flax path, PyTorch name, Flax shape/dtype and the two transforms."""

    path: tuple
    torch_name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    to_flax: Callable[[Array], Array]
    to_torch: Callable[[Array], Array]

    @property
    def torch_shape(self) -> tuple[int, ...]:
        return self.to_torch(np.empty(self.shape, np.bool_)).shape


def _rule(module: nnx.Module, leaf: str):
    for mtype, fleaf, tleaf, to_flax, to_torch in RULES:
        if isinstance(module, mtype) and fleaf == leaf:
            return tleaf, to_flax, to_torch
    return leaf, _same, _same


def table(model: nnx.Module, prefix: str = "") -> dict[str, Leaf]:
    """PyTorch name → :class:`Leaf` for every variable of ``model`` (abstract models work too)."""
    nodes = dict(nnx.iter_graph(model))
    out: dict[str, Leaf] = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        parent = nodes[path[:-1]]
        tleaf, to_flax, to_torch = _rule(parent, path[-1])
        name = prefix + ".".join(str(p) for p in (*path[:-1], tleaf))
        if name in out:
            raise AssertionError(f"two Flax leaves map to {name}: {out[name].path} and {path}")
        value = var.get_value() if isinstance(var, nnx.Variable) else var
        out[name] = Leaf(path, name, tuple(value.shape), np.dtype(value.dtype), to_flax, to_torch)
    return out


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the model; the message lists every problem at once."""


def unwrap_state_dict(obj, source: str = "checkpoint") -> dict[str, Array]:
    """Accept a raw state dict, ``{"model": …}``/``{"state_dict": …}`` wrappers and DataParallel's
    ``module.`` prefixes; return ``{name: array}``."""
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointMismatch(f"{source}: expected a state dict (name → tensor), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        out[k] = np.asarray(v)
    return out


def _mismatches(expected: Mapping[str, Leaf], state: Mapping[str, Array]):
    """(missing, unexpected, mis-shaped) names of ``state`` against ``expected``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [k for k in expected if k in state and tuple(state[k].shape) != expected[k].torch_shape]
    return missing, unexpected, misshaped


def problems(expected: Mapping[str, Leaf], state: Mapping[str, Array]) -> list[str]:
    """Every missing, unexpected and mis-shaped tensor of ``state`` against ``expected``."""
    missing, unexpected, misshaped = _mismatches(expected, state)
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)}, model {expected[k].torch_shape}"
                 for k in misshaped]
    out = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = "\n    ".join(items[:12]) + (f"\n    … and {len(items) - 12} more" if len(items) > 12 else "")
            out.append(f"  {len(items)} {title}:\n    {shown}")
    return out


@functools.cache
def _torch_shapes(cfg: SamConfig) -> dict[str, Leaf]:
    return table(abstract_model(cfg))


def infer_preset(state: Mapping[str, Array], hint: str = "") -> tuple[str | None, dict[str, int]]:
    """The preset whose tensors match ``state`` exactly (None if none does), and the number of
    problems for every preset. ``medsam_vit_b`` and ``sam_vit_b`` share shapes; ``hint`` (e.g. the
    file name) containing "medsam" picks MedSAM, otherwise SAM."""
    scores = {name: sum(map(len, _mismatches(_torch_shapes(SamConfig.preset(name)), state)))
              for name in SAM_PRESETS}
    exact = [n for n, s in scores.items() if s == 0]
    if {"medsam_vit_b", "sam_vit_b"} <= set(exact):
        exact = ["medsam_vit_b" if "medsam" in hint.lower() else "sam_vit_b"]
    return (exact[0] if exact else None), scores


def check_state(cfg: SamConfig, state: Mapping[str, Array], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatch` naming every problem and the preset it looks like."""
    found = problems(_torch_shapes(cfg), state)
    if not found:
        return
    best, scores = infer_preset(state, source)
    closest = best or min(scores, key=scores.get)
    hint = (f"It matches preset {best!r}: pass --model {best} (or omit --model)." if best else
            f"It looks most like preset {closest!r} ({scores[closest]} problems).")
    raise CheckpointMismatch(f"{source} does not fit preset {cfg.name!r}:\n" + "\n".join(found)
                             + "\n" + hint)


def load_state(model: nnx.Module, state: Mapping[str, Array], source: str = "checkpoint",
               prefix: str = "") -> None:
    """Copy a PyTorch state dict into ``model`` in place (shapes checked, every key used).

    ``model`` may be abstract (``nnx.eval_shape``): converting never runs a random init.
    """
    expected = table(model, prefix)
    found = problems(expected, state)
    if found:
        raise CheckpointMismatch(f"{source} does not fit the model:\n" + "\n".join(found))
    flat = [(leaf.path, jnp.asarray(np.array(leaf.to_flax(state[name]), order="C"),
                                    dtype=leaf.dtype))
            for name, leaf in expected.items()]
    nnx.update(model, nnx.from_flat_state(flat))


def to_torch_state(model: nnx.Module, prefix: str = "") -> dict[str, Array]:
    """Flax model → PyTorch state dict as NumPy arrays (``num_batches_tracked`` as int64)."""
    expected = table(model, prefix)
    by_path = {l.path: l for l in expected.values()}
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        leaf = by_path[path]
        value = np.array(leaf.to_torch(np.asarray(var.get_value())), order="C")
        if leaf.torch_name.endswith("num_batches_tracked"):
            value = value.astype(np.int64)
        out[leaf.torch_name] = value
    return out


def sam_from_torch(state: Mapping[str, Array], cfg: SamConfig | str | None = None,
                   source: str = "checkpoint") -> Sam:
    """Build a Flax :class:`Sam` from a PyTorch state dict; the preset is inferred if not given."""
    state = unwrap_state_dict(state, source)
    if cfg is None:
        name, scores = infer_preset(state, source)
        if name is None:
            closest = min(scores, key=scores.get)
            check_state(SamConfig.preset(closest), state, source)
        cfg = name
    if isinstance(cfg, str):
        cfg = SamConfig.preset(cfg)
    check_state(cfg, state, source)
    model = abstract_model(cfg)
    load_state(model, state, source)
    return model


__all__ = ["CheckpointMismatch", "Leaf", "RULES", "table", "unwrap_state_dict", "infer_preset",
           "check_state", "load_state", "to_torch_state", "sam_from_torch"]
