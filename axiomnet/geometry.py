"""Poincaré-disk coordinates, hyperbolic distances and the greedy next-hop rule (pure, no I/O).

A node's coordinates are a point ``(r, theta)`` in polar form strictly inside the unit disk. Every
:class:`Coords` instance is valid by construction, so :func:`distance` is finite for any two of them.
Untrusted numbers (from a peer's heartbeat) go through :meth:`Coords.validated`, which raises
:class:`InvalidCoordinates`; rows of a numpy array that are not valid points are at distance ``+inf``
in :func:`distances_to` and are never chosen by :func:`greedy_next_hop` (seed failures #11 and #12).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from axiomnet.errors import InvalidCoordinates

TAU = 2.0 * math.pi
COORDS_KEY_PERSON = b"axn-crd"  # BLAKE2s personalisation of coords_from_key
KEY_PLACEMENT_RADIUS = 0.9  # coords_from_key places nodes at r in [0, KEY_PLACEMENT_RADIUS)
_U53 = float(1 << 53)


def _normalise_theta(theta: float) -> float:
    """``theta`` folded into [0, 2pi); Python's ``%`` can round a tiny negative angle up to exactly 2pi."""
    t = theta % TAU
    return 0.0 if t >= TAU else t + 0.0  # "+ 0.0" turns -0.0 into 0.0


@dataclass(frozen=True, slots=True)
class Coords:
    """A point strictly inside the Poincaré disk: ``0 <= r < 1`` and ``0 <= theta < 2pi``, both finite.

    The plain constructor is for values this node computed itself and raises ``ValueError`` (a local bug)
    on anything outside that range; use :meth:`validated` for input from the network.
    """

    r: float
    theta: float

    def __post_init__(self) -> None:
        r, theta = self.r, self.theta
        if not _is_real(r) or not _is_real(theta):
            raise ValueError(f"coordinates must be real numbers, got r={r!r}, theta={theta!r}")
        r, theta = _as_float(r, ValueError), _as_float(theta, ValueError)
        if not (math.isfinite(r) and 0.0 <= r < 1.0):
            raise ValueError(f"r={r!r} is not a finite radius in [0, 1)")
        if not (math.isfinite(theta) and 0.0 <= theta < TAU):
            raise ValueError(f"theta={theta!r} is not a finite angle in [0, 2pi); use Coords.validated")
        object.__setattr__(self, "r", r + 0.0)
        object.__setattr__(self, "theta", theta + 0.0)

    @classmethod
    def validated(cls, r: Any, theta: Any) -> Coords:
        """Coords from untrusted numbers: InvalidCoordinates unless both are finite reals and 0 <= r < 1.

        A finite ``theta`` outside [0, 2pi) is normalised (an angle and its 2pi-shifts are the same point).
        """
        if not _is_real(r) or not _is_real(theta):
            kinds = f"{type(r).__name__}, {type(theta).__name__}"
            raise InvalidCoordinates(f"coordinates must be real numbers, got {kinds}")
        r_f, theta_f = _as_float(r, InvalidCoordinates), _as_float(theta, InvalidCoordinates)
        if not math.isfinite(r_f):
            raise InvalidCoordinates(f"radius {r_f!r} is not finite")
        if not 0.0 <= r_f < 1.0:
            raise InvalidCoordinates(f"radius {r_f!r} is outside the Poincaré disk [0, 1)")
        if not math.isfinite(theta_f):
            raise InvalidCoordinates(f"angle {theta_f!r} is not finite")
        return cls(r_f, _normalise_theta(theta_f))

    def to_cartesian(self) -> tuple[float, float]:
        """``(x, y)`` of this point in the unit disk."""
        return (self.r * math.cos(self.theta), self.r * math.sin(self.theta))


def _is_real(value: object) -> bool:
    # bool is an int subclass but never a coordinate; Real also admits numpy floats and ints.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _as_float(value: Any, error: type[Exception]) -> float:
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):  # e.g. an int of 400 digits
        raise error(f"coordinate {type(value).__name__} does not fit a float") from None


ORIGIN = Coords(0.0, 0.0)


def distance(a: Coords, b: Coords) -> float:
    """Hyperbolic distance between two points of the Poincaré disk; finite, symmetric, 0 only for a == b.

    ``d = 2 asinh(|u - v| / sqrt((1 - |u|^2)(1 - |v|^2)))``. ``|u - v|^2`` is the polar law of cosines
    rewritten as ``(ra - rb)^2 + (2 sqrt(ra) sqrt(rb) sin(dtheta / 2))^2``: a sum of squares (taken with
    ``hypot``), so it cannot go negative, does not cancel for nearby points and does not underflow for
    tiny radii; ``1 - r^2`` is computed as ``(1 - r)(1 + r)``, exact enough near the rim that even
    ``r = 1 - 2^-53`` gives a finite distance (at most about 75). Every step is symmetric in ``a`` and
    ``b``, so ``distance(a, b) == distance(b, a)`` exactly.
    """
    ra, rb = a.r, b.r
    s = math.sin(abs(a.theta - b.theta) * 0.5)
    chord = math.hypot(ra - rb, 2.0 * (math.sqrt(ra) * math.sqrt(rb)) * s)
    scale = math.sqrt(((1.0 - ra) * (1.0 + ra)) * ((1.0 - rb) * (1.0 + rb)))
    return 2.0 * math.asinh(chord / scale)


FloatArray = npt.NDArray[np.float64]


def _as_points(points: npt.ArrayLike) -> FloatArray:
    """``points`` as a float64 array of shape (n, 2); ValueError for any other shape (a local bug)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {arr.shape}")
    return arr


def distances_to(points: npt.ArrayLike, target: Coords) -> FloatArray:
    """Hyperbolic distance from each ``(r, theta)`` row of ``points`` to ``target``, shape (n,).

    Rows that are not valid points (NaN or infinite r or theta, ``r >= 1``, ``r < 0``) get ``+inf``,
    never NaN; a finite theta is normalised exactly as :meth:`Coords.validated` does, so each finite
    entry equals :func:`distance` up to floating-point rounding. An empty input gives an empty result.
    """
    pts = _as_points(points)
    r = pts[:, 0]
    theta = pts[:, 1]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        valid = np.isfinite(r) & np.isfinite(theta) & (r >= 0.0) & (r < 1.0)
        # Invalid rows are computed as the origin (harmless arithmetic) and overwritten with +inf below.
        r_ok = np.where(valid, r, 0.0)
        theta_ok = np.mod(np.where(valid, theta, 0.0), TAU)
        theta_ok = np.where(theta_ok >= TAU, 0.0, theta_ok)
        rt, tt = target.r, target.theta
        s = np.sin(np.abs(theta_ok - tt) * 0.5)
        chord = np.hypot(r_ok - rt, 2.0 * (np.sqrt(r_ok) * math.sqrt(rt)) * s)
        scale = np.sqrt(((1.0 - r_ok) * (1.0 + r_ok)) * ((1.0 - rt) * (1.0 + rt)))
        d = 2.0 * np.arcsinh(chord / scale)
    out: FloatArray = np.where(valid, d, np.inf)
    return out


def greedy_next_hop(self_coords: Coords, neighbour_points: npt.ArrayLike, target: Coords) -> int | None:
    """Index of the neighbour closest to ``target`` among those strictly closer than this node, or None.

    Ties go to the lowest index. A neighbour whose distance is not finite (invalid coordinates) is never
    chosen. None means no neighbour makes progress: deliver locally if ``self_coords == target``, else
    the greedy route has reached a local minimum. This node's own distance is computed in the same
    vectorised call as the neighbours', so a neighbour at identical coordinates is never "closer".
    """
    pts = _as_points(neighbour_points)
    if len(pts) == 0:
        return None
    rows = np.vstack((np.array([[self_coords.r, self_coords.theta]], dtype=np.float64), pts))
    d = distances_to(rows, target)
    own, theirs = d[0], d[1:]
    progress = np.isfinite(theirs) & (theirs < own)
    if not bool(progress.any()):
        return None
    # argmin returns the first minimum, which gives ties to the lowest index.
    return int(np.argmin(np.where(progress, theirs, np.inf)))


def coords_from_key(public_key: bytes) -> Coords:
    """Deterministic coordinates for a public key: ``r`` in [0, 0.9), ``theta`` in [0, 2pi).

    ``h = BLAKE2s-256(public_key, person=b"axn-crd")``; ``u``, ``w`` are the top 53 bits of ``h[0:8]``
    and ``h[8:16]`` (big-endian) divided by 2^53; ``r = 0.9 * sqrt(u)`` (uniform by Euclidean area in the
    disk of radius 0.9) and ``theta = 2pi * w``.
    """
    h = hashlib.blake2s(bytes(public_key), digest_size=32, person=COORDS_KEY_PERSON).digest()
    u = (int.from_bytes(h[0:8], "big") >> 11) / _U53
    w = (int.from_bytes(h[8:16], "big") >> 11) / _U53
    r = min(KEY_PLACEMENT_RADIUS * math.sqrt(u), math.nextafter(KEY_PLACEMENT_RADIUS, 0.0))
    return Coords.validated(r, TAU * w)
