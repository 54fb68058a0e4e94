"""Poincaré-disk points for display: the tree laid out on the disk, geodesics, distances (pure, no I/O).

Routing never uses this module: it uses the exact integer tree metric (greedy.py, PROTOCOL §5.3), because
float64 disk coordinates fail greedy routing from tree depth 16 (docs/ROUTING.md). What is here serves the
network map (ops/netmap.py, ``axiomnet-inspect map``): :func:`tree_layout` derives each node's display point
from its tree position, and :func:`geodesic` gives the hyperbolic line between two points (a circle arc
orthogonal to the boundary), along which the map draws tree links.

A point is ``(r, theta)`` in polar form strictly inside the unit disk. Every are a point ``(r, theta)`` in polar form strictly inside the unit disk. Every
:class:`Coords` instance is valid by construction, so :func:`distance` is finite for any two of them.
Untrusted numbers (from a peer's heartbeat) go through :meth:`Coords.validated`, which raises
:class:`InvalidCoordinates`; rows of a numpy array that are not valid points are at distance ``+inf``
in :func:`distances_to` and are never chosen by :func:`greedy_next_hop` (seed failures #11 and #12).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from axiomnet.errors import InvalidCoordinates

TAU = 2.0 * math.pi


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


# --- display: a tree laid out on the disk ----------------------------------------------------------------
DISPLAY_RIM = 0.86  # the deepest node of a laid-out tree sits at this Euclidean radius
DISPLAY_MAX_STEP = 1.2  # hyperbolic distance from one depth to the next in a shallow tree
MAX_WEDGE = 1.5 * math.pi  # a subtree below the root never wraps all the way around the centre
CHAIN_TWIST_SHARE = 0.4  # a chain below a node turns through at most this share of the node's wedge ...
MAX_CHAIN_TWIST = math.radians(20.0)  # ... and at most this much per step
STRAIGHT_RADIUS = 1e6  # a geodesic circle larger than this (in disk radii) is drawn as a straight segment

TreePath = tuple[int, ...]


def disk_radius(rho: float) -> float:
    """Euclidean radius of the point at hyperbolic distance ``rho`` from the centre: ``tanh(rho / 2)``."""
    return math.tanh(rho / 2.0)


def tree_layout(paths: Iterable[Sequence[int]], *, rim: float = DISPLAY_RIM,
                max_step: float = DISPLAY_MAX_STEP) -> dict[TreePath, Coords]:
    """Display points of tree nodes named by their paths (the ports from the root); every prefix of a given
    path is a node too, so the result holds the whole tree they imply (the root is the empty path).

    Hyperbolic wedge layout: the root is the centre; a node's wedge of angles is split among its children
    (in port order) in proportion to their numbers of leaves, a wedge below the root being at most 1.5 pi wide;
    a node sits in the middle of its wedge (a single child: turned from its parent by a small angle, so that a
    chain curves instead of hiding peer links along one radius) at hyperbolic distance ``depth x step`` from the
    centre, with
    ``step = min(max_step, 2 atanh(rim) / deepest depth)``, so the deepest node lands at Euclidean radius
    ``rim`` however deep the tree is (depth 100 stays inside the disk and every node keeps its own point).
    Display only: the exact paths stay the routing metric.
    """
    if not 0.0 < rim < 1.0 or not max_step > 0.0:
        raise ValueError(f"rim={rim!r} must be in (0, 1) and max_step={max_step!r} > 0")
    children: dict[TreePath, set[TreePath]] = {(): set()}
    for raw in paths:
        path = tuple(int(p) for p in raw)
        for depth in range(len(path), 0, -1):
            node, parent = path[:depth], path[:depth - 1]
            if node in children.get(parent, ()):
                break  # this prefix and all above it are known already
            children.setdefault(node, set())
            children.setdefault(parent, set()).add(node)
    order = {node: sorted(kids) for node, kids in children.items()}
    leaves: dict[TreePath, int] = {}
    height: dict[TreePath, int] = {}
    for node in sorted(order, key=len, reverse=True):  # deepest first: children are counted before parents
        leaves[node] = sum(leaves[kid] for kid in order[node]) or 1
        height[node] = max((height[kid] + 1 for kid in order[node]), default=0)
    deepest = max(len(node) for node in order)
    step = min(max_step, 2.0 * math.atanh(rim) / deepest) if deepest else max_step
    out: dict[TreePath, Coords] = {}
    # node, its wedge (start, width), its angle, and the turn per step of the chain it is in (None: not in one)
    stack: list[tuple[TreePath, float, float, float, float | None]] = [((), 0.0, TAU, 0.0, None)]
    while stack:
        node, start, width, angle, turn = stack.pop()
        out[node] = Coords(disk_radius(len(node) * step), _normalise_theta(angle)) if node else ORIGIN
        if node:  # below the root a subtree keeps to at most MAX_WEDGE around its node
            middle = start + width / 2.0
            width = min(width, MAX_WEDGE)
            start = middle - width / 2.0
        kids = order[node]
        if node and len(kids) == 1:  # a chain turns a little at each step instead of running along one radius
            if turn is None:  # its first node: the whole chain turns through at most CHAIN_TWIST_SHARE
                turn = min(CHAIN_TWIST_SHARE * width / height[node], MAX_CHAIN_TWIST)
            stack.append((kids[0], start, width, angle + turn, turn))
            continue
        for kid in kids:
            share = width * leaves[kid] / leaves[node]
            stack.append((kid, start, share, start + share / 2.0, None))
            start += share
    return out


@dataclass(frozen=True, slots=True)
class Geodesic:
    """The hyperbolic line segment between two points of the disk, in Cartesian coordinates: an arc of the
    circle ``centre``/``radius`` (orthogonal to the unit circle), or a straight segment (``centre`` None) when
    the two points lie on a diameter."""

    start: tuple[float, float]
    end: tuple[float, float]
    centre: tuple[float, float] | None
    radius: float | None


def geodesic(a: Coords, b: Coords) -> Geodesic:
    """The geodesic from ``a`` to ``b``: the circle through both that meets the boundary at right angles.

    Its centre ``c`` solves ``2 c.p = |p|^2 + 1`` for ``p`` = a and b (orthogonality: ``|c|^2 = radius^2 + 1``);
    when a, b and the centre of the disk are collinear the system is singular and the geodesic is the
    diameter's straight segment (also used once the circle would be larger than STRAIGHT_RADIUS).
    """
    p, q = a.to_cartesian(), b.to_cartesian()
    det = p[0] * q[1] - p[1] * q[0]
    if det != 0.0:
        sp, sq = p[0] * p[0] + p[1] * p[1] + 1.0, q[0] * q[0] + q[1] * q[1] + 1.0
        cx = (sp * q[1] - sq * p[1]) / (2.0 * det)
        cy = (sq * p[0] - sp * q[0]) / (2.0 * det)
        radius = math.sqrt(max(cx * cx + cy * cy - 1.0, 0.0))
        if math.isfinite(radius) and radius < STRAIGHT_RADIUS:
            return Geodesic(p, q, (cx, cy), radius)
    return Geodesic(p, q, None, None)
