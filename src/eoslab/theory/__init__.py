"""Theoretical predictions to compare simulations with (closed forms and numerically exact maps)."""
