"""One exception type for every input the user can get wrong.

The CLI turns an :class:`EoslabError` into a one-line message and exit code 2.
"""


class EoslabError(ValueError):
    """Invalid user input: a bad step size, mismatched shapes, an unknown model, a corrupt file."""


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as float if it is finite and > 0, else raise naming ``name``."""
    v = float(value)
    if not (v > 0.0) or v != v or v == float("inf"):
        raise EoslabError(f"{name} must be a finite positive number, got {value!r}")
    return v


def check_positive_int(name: str, value: int) -> int:
    if int(value) != value or int(value) <= 0:
        raise EoslabError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
