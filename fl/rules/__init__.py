"""Aggregation rules, one module each, found by name (``fl.rules.registry``).

A rule is a frozen dataclass subclassing ``fl.rules.base.Rule`` with a ``name``: its fields
are its parameters (type, bounds and default declared once, with ``param``), and it
implements the combine step (and a selection step where the rule selects). The shared
machinery around every rule (input ordering, norm bounding, server momentum, the result
and its hash) is ``fl.aggregate``; the integer grid rules compute on is ``fl.fixedpoint``.
``CONTRIBUTING.md`` says how to add one.

This package imports nothing heavy (no torch), so genesis validation can use the registry.
"""
