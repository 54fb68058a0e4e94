"""AxiomNet. This folder is the pure protocol core (no sockets, no threads, time passed in; checked by
tests/unit/test_layers.py); the operator face (axiomnet.ops), the actors (axiomnet.actors) and the lab
(axiomnet.lab) live in the top-level folders ops/, actors/ and lab/ and are installed under this name."""

__version__ = "0.1.0"
