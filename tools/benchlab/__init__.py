"""The benchmark's own lab: the peer overlays it measures against (wireguard-go, Nebula, Yggdrasil), its
measurements, and a session holder. Beside tools/bench.py, not in the wheel."""
