"""The lab: network namespaces, real daemons in them, traffic and the demo. Root only; the daemon never imports it.

Installed as ``axiomnet.lab`` (pyproject's package-dir).
"""

if __name__ != "axiomnet.lab":  # pragma: no cover - a wrong sys.path, never a user's path
    raise ImportError(f"the lab is the package axiomnet.lab, not {__name__!r}: pip install -e .")
