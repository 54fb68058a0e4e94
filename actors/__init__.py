"""AxiomNet actors: pykka actors that own threads, sockets, the TUN device and the clock.

Installed as ``axiomnet.actors`` (pyproject's package-dir). Importing this folder under another name would
give every message class a twin, and isinstance dispatch would fail silently: refuse it.
"""

if __name__ != "axiomnet.actors":  # pragma: no cover - a wrong sys.path, never a user's path
    raise ImportError(f"the actors are the package axiomnet.actors, not {__name__!r}: pip install -e .")
