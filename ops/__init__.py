"""The operator face: the command line, config, the identity store, inspect tables, metrics and health.

Installed as ``axiomnet.ops`` (pyproject's package-dir); it sits on the protocol core and under the actors.
"""

if __name__ != "axiomnet.ops":  # pragma: no cover - a wrong sys.path, never a user's path
    raise ImportError(f"the operator face is the package axiomnet.ops, not {__name__!r}: pip install -e .")
