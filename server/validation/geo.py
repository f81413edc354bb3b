"""Plane geometry on WGS-84 positions, good for the few kilometres a training area or a minute covers. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def inside_polygon(lat: float, lon: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Whether (lat, lon) lies inside ``polygon`` ((lat, lon) corners, open or closed), by ray casting.

    Points exactly on an edge may fall either way; teaching areas are drawn with a margin.
    """
    inside = False
    n = len(polygon)
    for i in range(n):
        y1, x1 = polygon[i]
        y2, x2 = polygon[(i + 1) % n]
        if (y1 > lat) != (y2 > lat):
            x = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x:
                inside = not inside
    return inside


#: A polygon made ready for many :func:`inside_prepared` tests: its bounding box, and per edge that crosses some
#: latitude ``(y1, y2, x1, x2 - x1, y2 - y1)`` (an edge along a parallel never changes the answer).
PreparedPolygon = tuple[tuple[float, float, float, float], tuple[tuple[float, float, float, float, float], ...]]


def prepare_polygon(polygon: Sequence[tuple[float, float]]) -> PreparedPolygon:
    """``polygon`` for :func:`inside_prepared`, which answers exactly as :func:`inside_polygon` on it."""
    n = len(polygon)
    edges = []
    for i in range(n):
        y1, x1 = polygon[i]
        y2, x2 = polygon[(i + 1) % n]
        if y1 != y2:
            edges.append((y1, y2, x1, x2 - x1, y2 - y1))
    if not n:
        return (math.inf, -math.inf, math.inf, -math.inf), ()
    lats = [p[0] for p in polygon]
    lons = [p[1] for p in polygon]
    # the crossing longitudes are computed in floating point and may stray from their edge by a few ulps
    margin = 1e-9 * max(1.0, max(abs(x) for x in lons))
    return (min(lats), max(lats), min(lons) - margin, max(lons) + margin), tuple(edges)


def inside_prepared(lat: float, lon: float, prepared: PreparedPolygon) -> bool:
    """:func:`inside_polygon` on a prepared polygon: the same answer, a point outside its bounding box at once.

    Outside the box the answer is "no" for the ray cast too: a latitude below or at/above every corner crosses no
    edge, and a longitude east of every edge crosses none while one west of all of them crosses an even number.
    """
    (low, high, west, east), edges = prepared
    if lat < low or lat >= high or lon < west or lon > east:
        return False
    inside = False
    for y1, y2, x1, dx, dy in edges:
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * dx / dy:
            inside = not inside
    return inside
