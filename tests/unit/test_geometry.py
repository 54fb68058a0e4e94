"""Poincaré-disk coordinates: validation, distance invariants, the vectorised path, greedy next hop, display layout."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from axiomnet.errors import InvalidCoordinates, RemoteProtocolError
from axiomnet.geometry import (
    DISPLAY_RIM,
    ORIGIN,
    TAU,
    Coords,
    distance,
    distances_to,
    geodesic,
    greedy_next_hop,
    tree_layout,
)

NEAR_RIM = [1 - 1e-12, math.nextafter(1.0, 0.0)]

radii = st.floats(0.0, 1.0, exclude_max=True) | st.sampled_from([0.0, 5e-324, 1e-300, 0.5, *NEAR_RIM])
angles = st.floats(0.0, TAU, exclude_max=True)
points = st.builds(Coords, radii, angles)
# Rows a hostile or buggy peer could put in a neighbour table: valid points mixed with everything else.
bad_radii = st.sampled_from([1.0, 1.5, -0.1, -0.0, math.nan, math.inf, -math.inf, 1e308])
any_rows = st.lists(
    st.tuples(radii | bad_radii, st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf, -math.inf, 999.0])),
    max_size=12,
)


def as_array(rows: list[tuple[float, float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def row_to_coords(r: float, theta: float) -> Coords | None:
    """The point a row denotes, or None if validation rejects it."""
    try:
        return Coords.validated(r, theta)
    except InvalidCoordinates:
        return None


# --- validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("r", "theta"),
    [
        (1.5, 0.0),
        (-0.1, 0.0),
        (1.0, 0.0),
        (math.nan, 0.0),
        (math.inf, 0.0),
        (-math.inf, 0.0),
        (0.5, math.nan),
        (0.5, math.inf),
        (0.5, -math.inf),
        (True, 0.0),
        (0.5, False),
        ("0.5", 0.0),
        (None, 0.0),
        (0.5 + 0j, 0.0),
        (10**400, 0.0),
        (0.5, -(10**400)),
    ],
)
def test_coordinate_validation(r: Any, theta: Any) -> None:
    with pytest.raises(InvalidCoordinates):
        Coords.validated(r, theta)


def test_finite_theta_outside_zero_two_pi_is_normalised() -> None:
    c = Coords.validated(0.5, 999.0)
    assert c.theta == 999.0 % TAU and 0.0 <= c.theta < TAU
    assert Coords.validated(0.5, -1.0).theta == TAU - 1.0
    assert Coords.validated(0.5, TAU).theta == 0.0
    # -1e-300 % 2pi rounds to exactly 2pi in floating point; it must land on 0, not outside the range.
    assert Coords.validated(0.5, -1e-300).theta == 0.0
    assert Coords.validated(0.5, 1e300).theta < TAU
    assert distance(Coords.validated(0.5, 1.0 + 7 * TAU), Coords(0.5, 1.0)) < 1e-9


def test_validated_accepts_numpy_and_integer_numbers_as_floats() -> None:
    c = Coords.validated(np.float32(0.5), 3)
    assert c == Coords(0.5, 3.0) and type(c.r) is float and type(c.theta) is float
    assert math.copysign(1.0, Coords.validated(-0.0, -0.0).r) == 1.0


def test_invalid_coordinates_are_a_remote_protocol_error() -> None:
    assert issubclass(InvalidCoordinates, RemoteProtocolError)


@pytest.mark.parametrize(
    ("r", "theta"), [(1.0, 0.0), (-0.1, 0.0), (math.nan, 0.0), (0.5, 999.0), (0.5, -1.0), (0.5, TAU), (True, 0.0)]
)
def test_constructing_invalid_coords_locally_is_a_value_error(r: Any, theta: Any) -> None:
    with pytest.raises(ValueError):
        Coords(r, theta)


def test_coords_are_immutable_and_hashable() -> None:
    c = Coords(0.5, 1.0)
    with pytest.raises(AttributeError):
        c.r = 0.1  # type: ignore[misc]
    assert {c, Coords(0.5, 1.0)} == {c}
    assert ORIGIN == Coords(0.0, 0.0)


def test_to_cartesian() -> None:
    x, y = Coords(0.5, math.pi / 2).to_cartesian()
    assert x == pytest.approx(0.0, abs=1e-15) and y == pytest.approx(0.5)
    assert ORIGIN.to_cartesian() == (0.0, 0.0)


# --- test_hyperbolic_distance_infinity ---------------------------------------------------------------------
def test_hyperbolic_distance_infinity() -> None:
    with pytest.raises(InvalidCoordinates):
        Coords.validated(1.0, 0.0)
    target = Coords(0.99, 0.0)
    # The r=1.0 row sits (in Euclidean terms) right next to the target, which a naive min() would pick.
    rows = as_array([(0.3, 0.0), (1.0, 0.0), (math.nan, 0.0), (0.5, math.inf)])
    d = distances_to(rows, target)
    assert not np.isnan(d).any()
    assert np.isfinite(d[0]) and np.isposinf(d[1:]).all()
    assert greedy_next_hop(ORIGIN, rows, target) == 0
    assert greedy_next_hop(ORIGIN, rows[1:], target) is None


def test_distance_is_finite_right_at_the_rim() -> None:
    for r in NEAR_RIM:
        a, b = Coords(r, 0.0), Coords(r, math.pi)
        assert math.isfinite(distance(a, b)) and distance(a, b) > 50
        assert math.isfinite(distance(ORIGIN, a))
        assert np.isfinite(distances_to(as_array([(r, math.pi)]), a)).all()


def test_distance_matches_the_textbook_formula_away_from_the_rim() -> None:
    a, b = Coords(0.3, 0.4), Coords(0.6, 2.5)
    (ax, ay), (bx, by) = a.to_cartesian(), b.to_cartesian()
    textbook = math.acosh(1 + 2 * ((ax - bx) ** 2 + (ay - by) ** 2) / ((1 - a.r**2) * (1 - b.r**2)))
    assert distance(a, b) == pytest.approx(textbook, rel=1e-12)
    assert distance(ORIGIN, Coords(0.5, 1.0)) == pytest.approx(2 * math.atanh(0.5), rel=1e-14)


# --- distance invariants ---------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(a=points, b=points)
def test_prop_coordinate_distance_commutative(a: Coords, b: Coords) -> None:
    assert distance(a, b) == distance(b, a)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(a=points, b=points)
def test_distance_is_finite_non_negative_and_zero_only_on_equal_points(a: Coords, b: Coords) -> None:
    d = distance(a, b)
    assert math.isfinite(d) and d >= 0.0
    assert distance(a, a) == 0.0
    same_point = a.r == b.r and (a.r == 0.0 or a.theta == b.theta)
    if same_point:
        assert d == 0.0
    # A lower bound of the Euclidean separation |u - v|; below ~1e-300 it is not representable anyway
    # (two points at r = 5e-324 are "equal within tolerance").
    separation = max(abs(a.r - b.r), 2.0 * min(a.r, b.r) * abs(math.sin((a.theta - b.theta) / 2)))
    if separation > 1e-300:
        assert d > 0.0


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(a=points, b=points, c=points)
def test_distance_obeys_the_triangle_inequality(a: Coords, b: Coords, c: Coords) -> None:
    ab, bc, ac = distance(a, b), distance(b, c), distance(a, c)
    assert ac <= ab + bc + 1e-9 * (1.0 + ab + bc)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(a=points, b=points, turn=angles)
def test_distance_is_invariant_under_rotation(a: Coords, b: Coords, turn: float) -> None:
    assume(a.r < 0.999 and b.r < 0.999)
    ra = Coords.validated(a.r, a.theta + turn)
    rb = Coords.validated(b.r, b.theta + turn)
    assert distance(ra, rb) == pytest.approx(distance(a, b), rel=1e-9, abs=1e-9)


# --- vectorised path ----------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(rows=any_rows, target=points)
def test_distances_to_equals_scalar_distance_and_inf_for_invalid_rows(
    rows: list[tuple[float, float]], target: Coords
) -> None:
    d = distances_to(as_array(rows), target)
    assert d.shape == (len(rows),) and d.dtype == np.float64
    assert not np.isnan(d).any()
    for (r, theta), got in zip(rows, d, strict=True):
        point = row_to_coords(r, theta)
        if point is None:
            assert got == math.inf
        else:
            assert math.isclose(got, distance(point, target), rel_tol=1e-12, abs_tol=1e-300)


def test_distances_to_of_an_empty_table_is_empty() -> None:
    for empty in (np.empty((0, 2)), np.empty(0), []):
        result = distances_to(empty, ORIGIN)
        assert result.shape == (0,) and result.dtype == np.float64


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 1), (1, 2, 2)])
def test_distances_to_refuses_a_table_of_the_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        distances_to(np.zeros(shape), ORIGIN)


def test_distances_to_does_not_warn_on_invalid_rows() -> None:
    with np.errstate(all="raise"):
        d = distances_to(as_array([(math.nan, math.inf), (1e308, -1e308), (-math.inf, 0.0)]), ORIGIN)
    assert np.isposinf(d).all()


# --- greedy next hop ------------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(me=points, rows=any_rows, target=points)
def test_greedy_next_hop_picks_the_closest_strictly_better_valid_neighbour(
    me: Coords, rows: list[tuple[float, float]], target: Coords
) -> None:
    table = as_array(rows)
    choice = greedy_next_hop(me, table, target)
    d = distances_to(table, target)
    own = distances_to(as_array([(me.r, me.theta)]), target)[0]
    better = [i for i in range(len(rows)) if math.isfinite(d[i]) and d[i] < own]
    if not better:
        assert choice is None
    else:
        assert choice == min(better, key=lambda i: (d[i], i))
        assert math.isfinite(d[choice]) and row_to_coords(*rows[choice]) is not None
    # Scalar cross-check with a margin larger than rounding: a clearly better valid neighbour is never missed.
    own_scalar = distance(me, target)
    valid_points = [p for r, th in rows if (p := row_to_coords(r, th)) is not None]
    if any(distance(p, target) < own_scalar - 1e-9 for p in valid_points):
        assert choice is not None


def test_greedy_next_hop_returns_none_without_neighbours_or_progress() -> None:
    target = Coords(0.5, 0.0)
    assert greedy_next_hop(ORIGIN, np.empty((0, 2)), target) is None
    assert greedy_next_hop(ORIGIN, [], target) is None
    assert greedy_next_hop(target, as_array([(0.3, 0.0), (0.6, 0.0)]), target) is None  # already there
    assert greedy_next_hop(Coords(0.2, 0.0), as_array([(0.2, math.pi), (0.0, 0.0)]), target) is None


def test_greedy_next_hop_never_chooses_a_neighbour_at_our_own_coordinates() -> None:
    me = Coords(0.7, 2.0)
    assert greedy_next_hop(me, as_array([(me.r, me.theta)] * 5), Coords(0.1, 0.3)) is None


def test_greedy_next_hop_breaks_ties_by_lowest_index() -> None:
    table = as_array([(0.9, math.pi), (0.4, 0.0), (0.6, 0.1), (0.4, 0.0)])
    assert greedy_next_hop(Coords(0.9, 0.0), table, Coords(0.5, 0.0)) == 1


def test_greedy_next_hop_skips_nan_and_inf_rows_even_first() -> None:
    table = as_array([(math.nan, 0.0), (math.inf, 0.0), (0.5, math.nan), (1.0, 0.0), (0.45, 0.0)])
    assert greedy_next_hop(ORIGIN, table, Coords(0.5, 0.0)) == 4


# --- display: the tree on the disk, geodesics ---------------------------------------------------------------
def test_tree_layout_places_the_root_at_the_centre_and_every_prefix_deeper_outwards() -> None:
    layout = tree_layout([(1, 2, 3), (1, 5), (2,)])
    assert set(layout) == {(), (1,), (1, 2), (1, 2, 3), (1, 5), (2,)}  # every prefix is a node
    assert layout[()] == ORIGIN
    for path, point in layout.items():
        if path:
            assert point.r > layout[path[:-1]].r  # depth d at hyperbolic radius d x step
    assert layout[(1, 2, 3)].r == pytest.approx(DISPLAY_RIM)  # the deepest node sits at the rim
    assert layout[(1, 2)].r == layout[(1, 5)].r and layout[(1, 2)].theta < layout[(1, 5)].theta  # port order
    assert layout[(1, 2, 3)].theta != layout[(1, 2)].theta  # a chain turns: not along one radius


def test_tree_layout_of_a_depth_100_chain_stays_inside_the_disk_with_distinct_points() -> None:
    layout = tree_layout([tuple(range(1, 101))])
    assert len(layout) == 101
    radii = [layout[tuple(range(1, d + 1))].r for d in range(101)]
    assert all(0.0 <= r <= DISPLAY_RIM < 1.0 for r in radii)
    assert all(b - a > 1e-3 for a, b in zip(radii, radii[1:]))  # strictly outwards, never merged
    from_root = [distance(ORIGIN, layout[tuple(range(1, d + 1))]) for d in range(1, 101)]
    assert from_root == pytest.approx([d * from_root[0] for d in range(1, 101)])  # hyperbolic radius ~ depth
    assert len({c for c in layout.values()}) == 101


def test_tree_layout_gives_bigger_subtrees_wider_wedges() -> None:
    paths = [(1, k) for k in range(1, 9)] + [(2,)]
    layout = tree_layout(paths)
    spread = max(layout[(1, k)].theta for k in range(1, 9)) - min(layout[(1, k)].theta for k in range(1, 9))
    assert spread > math.pi  # 8 of the 9 leaves are below (1,)
    assert len({(c.r, c.theta) for c in layout.values()}) == len(layout)


def test_tree_layout_refuses_a_rim_outside_the_disk() -> None:
    with pytest.raises(ValueError):
        tree_layout([(1,)], rim=1.0)


@settings(max_examples=300, deadline=None)
@given(a=st.builds(Coords, st.floats(0.0, 0.99), angles), b=st.builds(Coords, st.floats(0.0, 0.99), angles))
def test_geodesic_is_a_circle_through_both_points_orthogonal_to_the_boundary(a: Coords, b: Coords) -> None:
    g = geodesic(a, b)
    assert g.start == a.to_cartesian() and g.end == b.to_cartesian()
    if g.centre is None:  # a straight segment: a, b and the centre of the disk are collinear
        (x0, y0), (x1, y1) = g.start, g.end
        assert abs(x0 * y1 - y0 * x1) < 1e-6
        return
    assert g.radius is not None
    cx, cy = g.centre
    for x, y in (g.start, g.end):
        assert math.hypot(x - cx, y - cy) == pytest.approx(g.radius, rel=1e-6, abs=1e-9)
    assert cx * cx + cy * cy == pytest.approx(g.radius ** 2 + 1.0, rel=1e-9)  # orthogonal to |z| = 1


def test_geodesic_through_the_centre_is_straight() -> None:
    assert geodesic(ORIGIN, Coords(0.5, 1.0)).centre is None
    assert geodesic(Coords(0.3, 0.0), Coords(0.6, math.pi)).centre is None  # on one diameter
