"""Spectra of the loss Hessian, the NTK and the Gauss-Newton matrix.

Dense routines (``jax.hessian``/``jax.jacobian`` + ``eigh``) for small P; matrix-free
Lanczos on Hessian-vector and Jacobian-vector products for large P; warm-started block
tracking of the top-k eigenpairs along a trajectory (:mod:`eoslab.spectra.davidson`, the
block-Davidson core; :mod:`eoslab.spectra.tracking`, the operators of a Problem side by side).
"""

from eoslab.spectra.dense import (gauss_newton_matrix, hessian_matrix, ntk_matrix, top_eigvals)
from eoslab.spectra.lanczos import LanczosResult, lanczos
from eoslab.spectra.operators import OPERATORS, gnvp, hvp, ntk_vp, operator
from eoslab.spectra.top import hessian_top, ntk_top
from eoslab.spectra.davidson import TrackResult, TrackState, track, track_init
from eoslab.spectra.tracking import data_subset, spectra_init, track_spectra

__all__ = ["gauss_newton_matrix", "hessian_matrix", "ntk_matrix", "top_eigvals", "LanczosResult",
           "lanczos", "hvp", "gnvp", "ntk_vp", "hessian_top", "ntk_top",
           "OPERATORS", "TrackResult", "TrackState", "data_subset", "operator", "spectra_init", "track",
           "track_init", "track_spectra"]
