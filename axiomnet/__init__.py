"""AxiomNet: the pure protocol core (no sockets, no threads, no actors)."""

__version__ = "0.1.0"
