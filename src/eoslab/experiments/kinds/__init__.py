"""Kinds of experiments. Every module here is imported by
:func:`eoslab.experiments.registry.discover` and registers its kinds with
:func:`eoslab.experiments.register`: adding a module is all it takes."""
