"""A vectorised bracket-then-golden-section minimiser for independent 1-D problems."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_INV_PHI = (np.sqrt(5.0) - 1.0) / 2.0


def minimize_bands(
    objective: Callable[[np.ndarray], np.ndarray],
    lower: float,
    upper: float,
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
    grid = np.linspace(lower, upper, grid_points)
    values = np.stack([objective(np.full(n_problems, g)) for g in grid])  # [G, n]
    calls = grid_points
    best = np.argmin(values, axis=0)
    a = grid[np.maximum(best - 1, 0)]
    b = grid[np.minimum(best + 1, grid_points - 1)]
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
    grid_best = values[best, np.arange(n_problems)]
    use_grid = grid_best < fx
    return np.where(use_grid, grid[best], x), np.where(use_grid, grid_best, fx), calls
