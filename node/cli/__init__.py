"""The ``fedchain`` command line (user layer): one module per command group.

Owns: argument parsing and the one-line error a person sees. ``main`` builds the parser
from each group's ``register`` function; ``common`` holds the shared flags and ``CLIError``.

May import: anything in ``node`` (``start`` runs the daemon), ``consensus`` and ``fl``.
Nothing imports the CLI.
"""
