"""A vectorised bracket-then-golden-section minimiser for independent 1-D problems."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_INV_PHI = (np.sqrt(5.0) - 1.0) / 2.0


def minimize_bands(
    objective: Callable[[np.ndarray], np.ndarray],
    lower: float | np.ndarray,
    upper: float | np.ndarray,
    n_problems: int,
    *,
    grid_points: int = 12,
    tol: float = 1e-3,
    max_iter: int = 60,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Minimise ``n_problems`` independent scalar functions evaluated together.

    ``objective(params)`` takes one parameter per problem (shape [n]) and returns one value per
    problem. A uniform grid of ``grid_points`` over ``[lower, upper]`` finds the best cell per
    problem; golden-section search then refines inside the two neighbouring cells until the
    bracket is narrower than ``tol``. Each step evaluates every problem once, so a batched
    objective (all bands in one blur) costs one call per step.

    Returns:
        ``(argmin [n], min value [n], number of objective calls)``.
    """
    # One grid per problem [G, n]: scalar bounds give the same grid to all.
    grid = np.linspace(
        np.broadcast_to(np.asarray(lower, dtype=np.float64), (n_problems,)),
        np.broadcast_to(np.asarray(upper, dtype=np.float64), (n_problems,)),
        grid_points,
    )
    values = np.stack([objective(g.copy()) for g in grid])  # [G, n]
    calls = grid_points
    best = np.argmin(values, axis=0)
    cols = np.arange(n_problems)
    a = grid[np.maximum(best - 1, 0), cols]
    b = grid[np.minimum(best + 1, grid_points - 1), cols]
    c = b - _INV_PHI * (b - a)
    d = a + _INV_PHI * (b - a)
    fc = objective(c)
    fd = objective(d)
    calls += 2
    for _ in range(max_iter):
        if np.all(b - a < tol):
            break
        left = fc < fd  # the minimum lies in [a, d]
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        new_c = b - _INV_PHI * (b - a)
        new_d = a + _INV_PHI * (b - a)
        probe = np.where(left, new_c, new_d)
        fp = objective(probe)
        calls += 1
        fd, fc = np.where(left, fc, fp), np.where(left, fp, fd)
        c, d = np.where(left, new_c, d), np.where(left, c, new_d)
    x = np.where(fc < fd, c, d)
    fx = np.minimum(fc, fd)
    # The grid point itself can beat the interior probes on a flat or kinked objective.
    grid_best = values[best, cols]
    use_grid = grid_best < fx
    return np.where(use_grid, grid[best, cols], x), np.where(use_grid, grid_best, fx), calls


def minimize_near(
    objective: Callable[[np.ndarray], np.ndarray],
    start: np.ndarray | None,
    half_width: float,
    bounds: tuple[float, float],
    n_problems: int,
    *,
    grid_points: int = 12,
    tol: float = 1e-3,
) -> tuple[np.ndarray, int]:
    """:func:`minimize_bands` in ``start +- half_width`` (5 points), over ``bounds`` if needed.

    A warm start for a search repeated after a small change of the problem: when any minimum
    lands within half a grid step of its bracket's edge (and that edge is not a bound), every
    problem is searched again over ``bounds`` with ``grid_points``, so the result never
    depends on the start being close. ``start`` None searches ``bounds`` directly.

    Returns:
        ``(argmin [n], number of objective calls)``.
    """
    if start is not None:
        lo = np.clip(np.asarray(start, dtype=np.float64) - half_width, *bounds)
        hi = np.clip(np.asarray(start, dtype=np.float64) + half_width, *bounds)
        x, _, calls = minimize_bands(objective, lo, hi, n_problems, grid_points=5, tol=tol)
        step = (hi - lo) / 4
        low_edge = (x - lo < step / 2) & (lo > bounds[0])
        high_edge = (hi - x < step / 2) & (hi < bounds[1])
        if not np.any(low_edge | high_edge):
            return x, calls
    else:
        calls = 0
    x, _, more = minimize_bands(
        objective, bounds[0], bounds[1], n_problems, grid_points=grid_points, tol=tol
    )
    return x, calls + more
