"""Models: each one is data plus pure functions that build a :class:`~eoslab.Problem`."""

from types import ModuleType

from eoslab.models import linear_net, quadratic2d, second_order, two_layer
from eoslab.models.second_order import SecondOrder

__all__ = ["quadratic2d", "second_order", "two_layer", "linear_net", "SecondOrder", "get"]

REGISTRY = {"quadratic2d": quadratic2d, "second_order": second_order, "two_layer": two_layer,
            "linear_net": linear_net}


def get(name: str) -> ModuleType:
    """The model module called ``name``; a clear error for an unknown one."""
    from eoslab.errors import EoslabError

    try:
        return REGISTRY[name]
    except KeyError:
        raise EoslabError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}") from None
