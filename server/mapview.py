"""Vector maps for the dashboard without a tile server: teaching-area outlines, tracks and cars projected into SVG.

Pure: (lat, lon) degrees in, SVG user units out. The projection is equirectangular around the middle latitude
(metres east and north of the view's corner); over a few kilometres its error is far below a car's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

M_PER_DEG_LAT = 111_195.0
#: Smallest view, metres: a parked car alone still gets a readable map around it.
MIN_SPAN_M = 300.0
PAD = 0.08  # share of the view left empty around what is drawn


@dataclass(frozen=True)
class Viewport:
    lat0: float  # south edge
    lon0: float  # west edge
    m_per_deg_lon: float
    scale: float  # SVG units per metre
    width: float
    height: float

    @classmethod
    def fit(cls, points: Iterable[tuple[float, float]], width: float = 800, height: float = 560) -> Viewport:
        pts = list(points)
        if not pts:
            pts = [(35.42, 119.52)]
        lats, lons = [p[0] for p in pts], [p[1] for p in pts]
        mid = (min(lats) + max(lats)) / 2
        m_lon = M_PER_DEG_LAT * math.cos(math.radians(mid))
        span_e = max((max(lons) - min(lons)) * m_lon, MIN_SPAN_M)
        span_n = max((max(lats) - min(lats)) * M_PER_DEG_LAT, MIN_SPAN_M)
        scale = min(width / (span_e * (1 + 2 * PAD)), height / (span_n * (1 + 2 * PAD)))
        # centre what is drawn
        centre_lat, centre_lon = (min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2
        lat0 = centre_lat - (height / scale / 2) / M_PER_DEG_LAT
        lon0 = centre_lon - (width / scale / 2) / m_lon
        return cls(lat0, lon0, m_lon, scale, width, height)

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        x = (lon - self.lon0) * self.m_per_deg_lon * self.scale
        y = self.height - (lat - self.lat0) * M_PER_DEG_LAT * self.scale
        return round(x, 1), round(y, 1)

    def path(self, points: Sequence[tuple[float, float]], closed: bool = False) -> str:
        """SVG path data through ``points``."""
        if not points:
            return ""
        coords = [self.xy(lat, lon) for lat, lon in points]
        d = "M" + " L".join(f"{x},{y}" for x, y in coords)
        return d + (" Z" if closed else "")

    def scale_bar(self) -> tuple[float, str]:
        """A round length (SVG units, label) about a fifth of the view wide."""
        target_m = self.width / self.scale / 5
        exp = 10 ** math.floor(math.log10(target_m))
        nice = max(v * exp for v in (1, 2, 5) if v * exp <= target_m)
        label = f"{nice / 1000:g} km" if nice >= 1000 else f"{nice:g} m"
        return nice * self.scale, label
