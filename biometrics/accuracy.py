"""Verification accuracy from labelled templates: genuine and impostor distances, FAR/FRR at a threshold, and the
smallest error rate a number of trials can demonstrate (pure: numpy only).

- A **genuine** pair is two templates of one person, an **impostor** pair two templates of different people; every
  unordered pair is counted once.
- **FAR** (false accept rate) is the share of impostor pairs closer than the threshold; **FRR** (false reject rate)
  the share of genuine pairs at or past it (a match is strictly closer, as :func:`biometrics.templates.is_match`).
- With ``n`` trials and no error, the 95 % upper confidence bound of the error rate is about ``3 / n`` (the "rule of
  three"); :func:`upper_bound_95` gives the exact one-sided Clopper-Pearson bound for ``k`` errors in ``n`` trials.
  That bound, not the observed 0 %, is what a data set demonstrates.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from biometrics.templates import FaceTemplate, distance


@dataclass(frozen=True)
class PairDistances:
    genuine: list[float]
    impostor: list[float]


@dataclass(frozen=True)
class ErrorRates:
    threshold: float
    genuine_pairs: int
    impostor_pairs: int
    false_rejects: int
    false_accepts: int

    @property
    def frr(self) -> float:
        return self.false_rejects / self.genuine_pairs if self.genuine_pairs else float("nan")

    @property
    def far(self) -> float:
        return self.false_accepts / self.impostor_pairs if self.impostor_pairs else float("nan")

    @property
    def frr_upper_95(self) -> float:
        return upper_bound_95(self.false_rejects, self.genuine_pairs)

    @property
    def far_upper_95(self) -> float:
        return upper_bound_95(self.false_accepts, self.impostor_pairs)


def pair_distances(templates: Mapping[str, Sequence[FaceTemplate]]) -> PairDistances:
    """Every genuine and impostor distance among ``templates`` (person → that person's templates)."""
    labelled = [(person, t) for person, ts in templates.items() for t in ts]
    genuine: list[float] = []
    impostor: list[float] = []
    for (pa, ta), (pb, tb) in itertools.combinations(labelled, 2):
        (genuine if pa == pb else impostor).append(distance(ta, tb))
    return PairDistances(sorted(genuine), sorted(impostor))


def error_rates(pairs: PairDistances, threshold: float) -> ErrorRates:
    return ErrorRates(
        threshold=threshold,
        genuine_pairs=len(pairs.genuine),
        impostor_pairs=len(pairs.impostor),
        false_rejects=sum(1 for d in pairs.genuine if d >= threshold),
        false_accepts=sum(1 for d in pairs.impostor if d < threshold),
    )


def upper_bound_95(errors: int, trials: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of an error rate seen ``errors`` times in ``trials`` independent
    trials (bisection on the binomial tail; 3/n for no error and large n)."""
    if trials <= 0:
        return 1.0
    if errors >= trials:
        return 1.0

    def tail(p: float) -> float:  # P(X <= errors) for X ~ Binomial(trials, p)
        term = (1.0 - p) ** trials
        total = term
        for k in range(errors):
            term *= (trials - k) / (k + 1) * p / (1.0 - p)
            total += term
        return total

    lo, hi = errors / trials, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if tail(mid) > 0.05:
            lo = mid
        else:
            hi = mid
    return hi


def trials_needed(rate: float) -> int:
    """Independent error-free trials needed for the 95 % upper bound to fall under ``rate`` (rule of three)."""
    n = max(1, int(3.0 / rate))
    while upper_bound_95(0, n) >= rate:
        n += max(1, n // 100)
    return n
