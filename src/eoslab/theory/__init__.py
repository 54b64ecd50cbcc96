"""Theoretical predictions to compare simulations with (closed forms and numerically exact maps)."""

from eoslab.theory import eos2d
from eoslab.theory.eos2d import EosLimit, eos_limit

__all__ = ["eos2d", "EosLimit", "eos_limit"]
