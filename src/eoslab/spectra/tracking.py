"""Tracking the top eigenvalues of a :class:`~eoslab.Problem`'s Hessian, Gauss-Newton matrix and
NTK along a trajectory: one warm-started tracker (:mod:`eoslab.spectra.davidson`) per operator.

:func:`spectra_init` builds the cold states (the right dimension for each operator, the
parameters' dtype), :func:`track_spectra` advances them all to new parameters (jittable). The
tracker itself (:func:`track`, :class:`TrackState`, :class:`TrackResult`, :func:`track_init`)
is re-exported here.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.flatten_util import ravel_pytree

from eoslab._precision import follows
from eoslab.errors import EoslabError
from eoslab.problem import Params, Problem
from eoslab.spectra.davidson import ENTRY_OVERLAP, TrackResult, TrackState, track, track_init
from eoslab.spectra.operators import OPERATORS, operator
from eoslab.typing import ArrayLike, Int, PRNGKeyArray

__all__ = ["ENTRY_OVERLAP", "OPERATORS", "TrackResult", "TrackState", "data_subset", "operator",
           "spectra_init", "track", "track_init", "track_spectra", "tracked_rows"]


@follows("problem")
def spectra_init(problem: Problem, k: int = 1, *, key: PRNGKeyArray, which: tuple[str, ...] = OPERATORS,
                 block: int | None = None, params: Params | None = None) -> dict[str, TrackState]:
    """Cold :class:`TrackState` s for the operators ``which`` of ``problem`` (dict by name).

    Dimensions: P (parameters) for ``"hessian"`` and ``"gauss_newton"``, the number of outputs
    for ``"ntk"``. The vectors take the parameters' dtype (float32 networks stay float32); each
    operator's start is drawn from ``fold_in(key, i)``."""
    flat = ravel_pytree(problem.params if params is None else params)[0]
    states = {}
    for i, name in enumerate(which):
        if name not in OPERATORS:
            raise EoslabError(f"unknown operator {name!r}; expected one of {OPERATORS}")
        dim = problem.targets.size if name == "ntk" else flat.size
        states[name] = track_init(dim, min(k, dim), jax.random.fold_in(key, i), flat.dtype, block)
    return states


@follows("problem", "params")
def track_spectra(problem: Problem, params: Params, states: dict[str, TrackState], *, tol: float = 1e-3,
                  atol: float = 0.0, max_products: int | None = None, products: dict | None = None,
                  matvecs: dict | None = None, **options: Any) -> tuple[dict[str, TrackState], dict[str, TrackResult]]:
    """Advance every tracker in ``states`` (from :func:`spectra_init`) to ``params``.

    Jittable; the operators are the keys of ``states``; ``options`` go to :func:`track`.
    ``products``: optional dict by operator name of the products of each tracker's k tracked
    rows at ``params`` already computed by the caller (:func:`track`'s ``products``; e.g. the
    Hessian's, from the training step's own gradient pass). ``matvecs``: optional dict by
    operator name of the matvec to use instead of :func:`operator`'s (the same operator at
    ``params``; e.g. the Hessian's from the step's linearisation, ``Context.hvp``).
    Returns ``(new_states, results)``, two dicts keyed like ``states`` (results:
    :class:`TrackResult`)."""
    new, results = {}, {}
    products, matvecs = products or {}, matvecs or {}
    for name, st in states.items():
        mv = matvecs[name] if name in matvecs else operator(problem, params, name)[0]
        new[name], results[name] = track(mv, st, tol=tol, atol=atol, max_products=max_products,
                                         products=products.get(name), **options)
    return new, results


def tracked_rows(state: TrackState) -> jax.Array:
    """``(k, n)``: the rows of ``state`` whose products :func:`track` needs first (pass their
    products as ``products=`` to save it computing them)."""
    return state.vectors[:state.k]


def data_subset(problem: Problem, indices: Int[ArrayLike, " n"]) -> Problem:
    """``problem.subset(indices)`` (kept for code written against earlier versions; see
    :meth:`eoslab.Problem.subset`)."""
    return problem.subset(indices)
