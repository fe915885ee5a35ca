"""The prompt seam: what produces the mask decoder's prompt for (image embedding, class ids).

A :class:`Route` is everything one way of prompting needs — the model parts it adds to the
frozen backbone, which variables train, its training loss, and its inference in three stages
(a batched device pass on the embeddings, a per-slice host step, a batched decode) — so
training (:mod:`automedsam_jax.train`), validation, evaluation and ``predict`` call the route
and never ask which one it is. The routes, one file each, registered by name
(``AutoMedSamConfig.prompt``, ``--prompt`` in every command):

``class``   the paper: the diffusion class prompt encoder prompts the trained decoder
            (:mod:`.class_prompt`).
``map``     a localisation head's class map gives each class a box, through the frozen
            backbone's own prompt encoder and decoder (:mod:`.map`).
``refine``  the map's box is the starting prompt that the diffusion class prompt encoder
            refines, trained with the joint loss (:mod:`.refine`).
``box``     the ground-truth box of each class present (+ an offset): the manual-prompt
            baseline of the paper's §4.5, for any SAM-family model; evaluation only
            (:mod:`.box`).

Adding a route: a module defining a :class:`Route` subclass decorated with :func:`register`,
imported at the end of this file.

Frames: embeddings ``(B, g, g, C)`` NHWC; boxes ``x0, y0, x1, y1`` in input-frame pixels (256 for
LiteMedSAM, 1024 for SAM/MedSAM); mask logits ``(B, K, L, L)`` in the low-res frame (L = 4g).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import numpy as np

from ..config import AutoMedSamConfig, ClassPromptConfig, LocaliserConfig, SamConfig

Record = dict[str, Any]


class Route:
    """One way of prompting the mask decoder (see the module docstring). Stateless: the model
    carries the weights, the route says what to do with them."""

    name: ClassVar[str]
    parts: ClassVar[tuple[str, ...]] = ()
    """the :class:`AutoMedSamConfig` fields the route's model parts come from
    (``class_prompt``, ``localiser``); the others are None in its models"""
    trains: ClassVar[bool] = True
    """False: evaluation only (``box``)"""
    grid_labels: ClassVar[bool] = False
    """training samples carry ``grid_label`` (the class ids at the embedding grid)"""
    presence_score: ClassVar[str] = "mask (p > 0.5)"
    """what a class's presence score on a slice is the area of (for the presence rule's text)"""

    # -- the model -----------------------------------------------------------------------------
    def new_parts(self, cfg: AutoMedSamConfig, seed: int, abstract: bool) -> dict[str, Any]:
        """The route's fresh parts, as :class:`~automedsam_jax.core.automedsam.AutoMedSAM`'s
        keyword arguments (``abstract``: shapes only, to be filled from a checkpoint)."""
        return {}

    # -- training (traced inside the jitted step) ----------------------------------------------
    def trainable(self, train_decoder: bool):
        """The nnx filter of the trained variables of a ``Trainee(model, loss_weights)``."""
        raise NotImplementedError(f"the {self.name!r} route does not train")

    def loss(self, trainee, embeddings: jax.Array, batch: dict, key: jax.Array, *,
             compute_dtype, negatives: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(total, terms) of one batch on its frozen ``embeddings`` ``(B, g, g, C)``."""
        raise NotImplementedError(f"the {self.name!r} route does not train")

    # -- inference -----------------------------------------------------------------------------
    def propose(self, model, embeddings: jax.Array) -> Any:
        """Batched, on the device: what the host step needs from each slice's embedding (the
        localiser's map), or None."""
        return None

    def prompts(self, model, proposal: Any, record: Record, class_ids: np.ndarray,
                input_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """On the host, one slice: ``proposal`` (this slice's share of :meth:`propose`, NumPy),
        its ``record`` (``resized_size``, ``original_size``, ``label`` when known) and the K
        requested ``class_ids`` → (the K prompts ``(K, ...)``, which are decoded ``(K,)`` bool,
        presence scores ``(K,)`` or None when they are the decoded masks' areas)."""
        raise NotImplementedError

    def masks(self, model, embeddings: jax.Array, prompts: jax.Array,
              class_ids: jax.Array) -> jax.Array:
        """Batched, on the device: ``(B, g, g, C)`` embeddings, ``(B, K, ...)`` prompts and the
        ``(K,)`` class ids → low-res logits ``(B, K, L, L)``."""
        raise NotImplementedError


ROUTES: dict[str, Route] = {}
"""Every route by name."""


def register(cls: type[Route]) -> type[Route]:
    """Class decorator: make ``cls`` the route called ``cls.name``."""
    ROUTES[cls.name] = cls()
    return cls


def get_route(name: str) -> Route:
    """The route called ``name``; an unknown name is a ``ValueError`` listing them."""
    if name not in ROUTES:
        raise ValueError(f"unknown prompt route {name!r}; choose one of {', '.join(ROUTES)}")
    return ROUTES[name]


def route_of(model) -> Route:
    """The route of an AutoMedSAM (its ``config.prompt``)."""
    return get_route(model.config.prompt)


def model_config(sam: SamConfig, prompt: str, class_prompt: ClassPromptConfig | None,
                 localiser: LocaliserConfig | None) -> AutoMedSamConfig:
    """The :class:`AutoMedSamConfig` of route ``prompt``: the parts it uses (which must be given),
    None for the others."""
    route = get_route(prompt)
    if not route.trains:
        raise ValueError(f"the {prompt!r} route makes no AutoMedSAM (it prompts a backbone)")
    given = {"class_prompt": class_prompt, "localiser": localiser}
    missing = [p for p in route.parts if given[p] is None]
    if missing:
        raise ValueError(f"the {prompt!r} route needs {' and '.join(missing)}")
    kept = {p: (v if p in route.parts else None) for p, v in given.items()}
    return AutoMedSamConfig(sam, kept["class_prompt"], kept["localiser"], prompt)


def new_parts(cfg: AutoMedSamConfig, seed: int, abstract: bool = False) -> dict[str, Any]:
    """Fresh parts of ``cfg``'s route (:meth:`Route.new_parts`)."""
    return get_route(cfg.prompt).new_parts(cfg, seed, abstract)


from . import box, class_prompt, map, refine  # noqa: E402,F401  (registration)
