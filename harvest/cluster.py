"""Pure k-means selection: the clustering core of ``harvest prune``.

Method. The embeddings (rows of ``x``, float32, L2-normalised, so Euclidean distance orders
points as cosine similarity does) are clustered with k-means into ``k`` centroids; every image is
labelled with its nearest centroid; one image per cluster is kept, either at random (SEN2NAIP's
rule: the member with the lowest :func:`image_priority`) or the one nearest to its centroid.

Fitting. The default backend, ``"lloyd"``, runs Lloyd's iterations: assign every row with
:func:`assign`, move every centroid to the mean of its members and every empty centroid onto the
worst-served rows, until no label changes (a fixed point) or an iteration lowers the inertia by
less than ``tol`` (0.01 %), at most ``max_iter`` times. ``"minibatch"`` (scikit-learn's
``MiniBatchKMeans``) and ``"faiss"`` (faiss' k-means, ``faiss-cpu``, optional) are kept for
comparison. Why Lloyd: pruning has ~5 images per cluster (18,000 clusters over ~100,000
images). There a full pass costs what a mini-batch epoch costs (one n x k matrix product either
way) but gains far more; mini-batch k-means stops on a noisy criterion with 3 % of the clusters
empty (fewer images kept than asked), and its random batches make the selection fork when the
embeddings move slightly (bf16 against fp32), while Lloyd's fixed point moves with the data.
Measured at 101,123 x 512 into 18,000 clusters on two cores (docs/benchmarks.md, "harvest
prune: clustering"): 40 s end to end, 3.5 % below the inertia of ``MiniBatchKMeans`` at its
defaults (13 minutes), no empty cluster, 99.5 % of the selected flags unchanged when the
embeddings move by bf16's rounding (mini-batch k-means: 91-95 %).

Init. ``init="auto"`` starts from k distinct rows drawn with the seed ("random") when k is above
:data:`AUTO_KMEANS_PP_MAX_CLUSTERS`, and from a stable k-means++ on a sample below. k-means++
places its centroids one after the other, each one a pass over its sample: at k = 18,000 that
alone takes more than ten minutes on two cores, while random rows take milliseconds, and Lloyd
from random rows ends below mini-batch k-means from k-means++. At small k, where a few
well-separated groups must each get their own centroid, random rows often put two centroids in
one group, which k-means cannot undo; k-means++ there costs a second or two.

Why "stable": scikit-learn's k-means++ (``init="k-means++"``) draws each centroid by inverting
the cumulative sum of the squared distances and keeps the best of a few such draws (greedy).
Both steps fork on a tiny move of the data: the embeddings of a bf16 run (L2 move ~0.004) gave
another init, hence other clusters, and only 80-88 % of the images kept their ``selected`` flag
(256 CLIP chips into 64 clusters; 4,000 synthetic embeddings into 1,000). ``"stable-k-means++"``
makes each draw an exponential race, ``argmin(E_i / D_i^p)`` with seeded E_i ~ Exp(1): a draw
changes only when two rows' ratios are within the move of each other. With p = 2 (k-means++'s
law) it kept 99.7 % of the flags but separated planted groups worse than the greedy draws (102
of 200 planted cases against 193) at a 9 % higher inertia; p = :data:`STABLE_INIT_POWER` (6)
favours far rows as the greedy trials do: 197 of 200 planted cases, inertia within 1 % of the
greedy one, 99.8 % of the flags kept (98.4-100 % on the CLIP chips). Larger p tends to
farthest-point order, which forks again (p = 40: 90-98 %).

Memory. :func:`assign` never builds the (n, k) distance matrix (101,123 x 18,000 float64 is
14 GB): it walks the rows in chunks whose (rows, k) float32 block stays within
:data:`ASSIGN_CHUNK_BYTES` (64 MiB), whatever k is, and uses ``||x - c||^2 = ||x||^2 - 2 x.c +
||c||^2`` with one float32 matrix product per chunk. :func:`cluster_and_select` holds one more
copy of the embeddings (sorted by key) and three (k, d) arrays: 730 MiB peak RSS at the size
above, 250 MiB of it the embeddings themselves.

Determinism. For the same inputs, seed, library versions and thread count, every function here
returns the same arrays. :func:`cluster_and_select` fits and assigns the rows sorted by key, so
its result does not depend on the order the caller holds them in either. The random choice of an
image inside its cluster depends only on the seed and the image's key (:func:`image_priority`),
not on row order, worker count or which other images exist; ties are broken by key (selection)
and by the lowest centroid index (assignment).

Incremental use (``harvest extend``). :func:`extend_selection` keeps every old image's cluster,
distance and selection as they are, assigns the new images to the existing centroids, and selects
a new image only for a cluster that has no selected member; ``grow`` appends new centroids fitted
on the new images only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harvest.errors import HarvestError

log = logging.getLogger(__name__)

#: Memory bound of one :func:`assign` chunk: the (rows, k) float32 block of dot products.
ASSIGN_CHUNK_BYTES = 64 * 2**20

#: ``init="auto"`` uses stable k-means++ up to this many clusters and random rows above. k-means++
#: places its centroids one after the other (k small passes over its sample): 0.6 s at k = 256,
#: 2 s at k = 1,000 on two cores, more than ten minutes at k = 18,000 on scikit-learn's sample
#: of 54,000 rows. Where it matters most (a few well-separated groups) k is small; at large k,
#: random rows are spread like the data and Lloyd's empty-cluster moves do the rest.
AUTO_KMEANS_PP_MAX_CLUSTERS = 1000
#: ``"stable-k-means++"`` draws each new centroid with probability ~ D^this (k-means++: D^2).
STABLE_INIT_POWER = 6
#: k-means++ runs on a seeded sample of max(3 k, this) rows (all rows if there are fewer).
KMEANS_PP_MIN_SAMPLE = 10_000

BACKENDS = ("lloyd", "minibatch", "faiss")
INITS = ("auto", "random", "stable-k-means++", "k-means++")
STRATEGIES = ("random", "nearest")


class ClusteringError(HarvestError, ValueError):
    """Clustering was asked for something the data cannot give (k > n, NaN, bad strategy...)."""


@dataclass(frozen=True)
class KMeansSettings:
    """How :func:`fit_centroids` fits k-means.

    Attributes:
        n_clusters: number of centroids k (>= 1, at most the number of images).
        seed: seed of the init (and of the mini-batch draws).
        backend: ``"lloyd"`` (full-batch Lloyd iterations on :func:`assign`, the default),
            ``"minibatch"`` (scikit-learn's ``MiniBatchKMeans``) or ``"faiss"`` (faiss' k-means,
            needs ``faiss-cpu``).
        init: ``"auto"`` (stable k-means++ up to :data:`AUTO_KMEANS_PP_MAX_CLUSTERS` clusters,
            random above), ``"random"`` (k distinct rows, seeded), ``"stable-k-means++"``
            (k-means++ drawn by an exponential race, see the module docstring) or
            ``"k-means++"`` (scikit-learn's greedy k-means++; both on a sample of
            max(3 k, :data:`KMEANS_PP_MIN_SAMPLE`) rows; tens of minutes at k = 18,000).
        max_iter: cap on the passes over the data: Lloyd iterations (``"lloyd"``,
            ``"faiss"``) or epochs (``"minibatch"``).
        tol: ``"lloyd"``: stop when an iteration lowers the inertia by less than this fraction.
        batch_size: ``"minibatch"``: rows per mini-batch.
        max_no_improvement: ``"minibatch"``: stop after this many mini-batches without
            improvement of the smoothed batch inertia; None runs all ``max_iter`` epochs.
        reassignment_ratio: ``"minibatch"``: centroids with fewer than this fraction of the
            largest cluster's count are moved to random points of the batch.
    """

    n_clusters: int
    seed: int = 0
    backend: str = "lloyd"
    init: str = "auto"
    max_iter: int = 15
    tol: float = 1e-4
    batch_size: int = 4096
    max_no_improvement: int | None = 10
    reassignment_ratio: float = 0.01

    def __post_init__(self) -> None:
        if self.n_clusters < 1:
            raise ClusteringError(
                f"--clusters {self.n_clusters} is not a number of clusters; ask for at least 1"
            )
        if self.batch_size < 1 or self.max_iter < 1:
            raise ClusteringError(
                f"batch_size {self.batch_size} and max_iter {self.max_iter} must both be >= 1"
            )
        if self.init not in INITS:
            raise ClusteringError(f"unknown k-means init {self.init!r}; use one of {INITS}")
        if self.backend not in BACKENDS:
            raise ClusteringError(
                f"unknown k-means backend {self.backend!r}; use one of {BACKENDS}"
            )
        if self.max_no_improvement is not None and self.max_no_improvement < 1:
            raise ClusteringError(
                f"max_no_improvement {self.max_no_improvement} must be >= 1, or None"
            )
        if not 0.0 <= self.tol < 1.0:
            raise ClusteringError(f"tol {self.tol} must be >= 0 and < 1")
        if not 0.0 <= self.reassignment_ratio <= 1.0:
            raise ClusteringError(
                f"reassignment_ratio {self.reassignment_ratio} must be between 0 and 1"
            )


@dataclass(frozen=True)
class Assignment:
    """Nearest centroid of every row.

    Attributes:
        labels: int64 (n,): index of the nearest centroid (lowest index on ties).
        distances: float32 (n,): Euclidean distance to it.
    """

    labels: np.ndarray
    distances: np.ndarray


@dataclass(frozen=True, eq=False)
class Selection:
    """Every image's cluster, distance to its centroid, and whether it is kept.

    Rows follow the caller's order of images (:func:`extend_selection` appends new rows after
    the old ones). Build one from saved arrays with :meth:`from_arrays`.

    Attributes:
        centroids: float32 (n_clusters, d).
        labels: int64 (n,): cluster of each image.
        distances: float32 (n,): distance of each image to its centroid.
        selected: bool (n,): the kept images, at most one per cluster.
        n_clusters: number of centroids, empty clusters included.
        n_empty: clusters without any image.
    """

    centroids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray
    selected: np.ndarray
    n_clusters: int
    n_empty: int
    _sizes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.centroids.ndim != 2 or self.centroids.shape[0] != self.n_clusters:
            raise ClusteringError(
                f"centroids of shape {self.centroids.shape} do not hold {self.n_clusters} "
                "clusters; save and load centroids and selection together"
            )
        if self.distances.shape != (n,) or self.selected.shape != (n,) or self.labels.ndim != 1:
            raise ClusteringError(
                f"labels {self.labels.shape}, distances {self.distances.shape} and selected "
                f"{self.selected.shape} must be 1-D of the same length; pass one row per image"
            )
        _check_labels(self.labels, self.n_clusters)
        sizes = np.bincount(self.labels, minlength=self.n_clusters).astype(np.int64)
        if int((sizes == 0).sum()) != self.n_empty:
            raise ClusteringError(
                f"n_empty {self.n_empty} does not match the labels ({int((sizes == 0).sum())} "
                "empty clusters); build the selection with Selection.from_arrays"
            )
        per_cluster = np.bincount(self.labels[self.selected], minlength=self.n_clusters)
        if n and per_cluster.max(initial=0) > 1:
            raise ClusteringError(
                f"cluster {int(per_cluster.argmax())} has {int(per_cluster.max())} selected "
                "images; a selection keeps at most one image per cluster"
            )
        sizes.flags.writeable = False
        object.__setattr__(self, "_sizes", sizes)

    @classmethod
    def from_arrays(
        cls,
        centroids: np.ndarray,
        labels: np.ndarray,
        distances: np.ndarray,
        selected: np.ndarray,
    ) -> Selection:
        """A selection from its arrays (e.g. read back from the selection table).

        Args:
            centroids: (k, d) centroids.
            labels: (n,) cluster of each image.
            distances: (n,) distance of each image to its centroid.
            selected: (n,) kept images.

        Returns:
            The selection, with ``n_clusters`` and ``n_empty`` computed.

        Raises:
            ClusteringError: if the arrays do not fit together.
        """
        c = _frozen(np.ascontiguousarray(centroids, dtype=np.float32))
        lab = _frozen(np.asarray(labels, dtype=np.int64))
        k = int(c.shape[0]) if c.ndim == 2 else 0
        _check_labels(lab, k)
        return cls(
            centroids=c,
            labels=lab,
            distances=_frozen(np.asarray(distances, dtype=np.float32)),
            selected=_frozen(np.asarray(selected, dtype=bool)),
            n_clusters=k,
            n_empty=int((np.bincount(lab, minlength=k) == 0).sum()),
        )

    @property
    def n_images(self) -> int:
        """Number of images (rows)."""
        return int(self.labels.shape[0])

    @property
    def n_selected(self) -> int:
        """Number of kept images (one per non-empty cluster after a full selection)."""
        return int(self.selected.sum())

    def cluster_sizes(self) -> np.ndarray:
        """Members per cluster: int64 (n_clusters,), zero for empty clusters."""
        return self._sizes


# --- fitting ---------------------------------------------------------------------------------


def fit_centroids(x: np.ndarray, settings: KMeansSettings) -> np.ndarray:
    """Fit k-means centroids to the embeddings.

    Args:
        x: (n, d) float embeddings (L2-normalised; converted to float32).
        settings: the number of clusters, seed, backend and its parameters.

    Returns:
        float32 (k, d) centroids.

    Raises:
        ClusteringError: if x is empty, not 2-D, not finite, or has fewer rows than clusters;
            or the faiss backend is asked for and faiss is not installed.
    """
    return _fit(_as_embeddings(x, "embeddings"), settings)[0]


def _fit(x: np.ndarray, settings: KMeansSettings) -> tuple[np.ndarray, Assignment | None]:
    """Centroids of checked float32 x, and the rows' assignment to them when it is at hand."""
    k = settings.n_clusters
    if k > x.shape[0]:
        raise ClusteringError(
            f"--clusters {k} is more than the {x.shape[0]} images; ask for at most "
            f"{x.shape[0]} clusters"
        )
    if settings.backend == "faiss":
        faiss = _import_faiss()
    start = initial_centroids(x, settings)
    if settings.backend == "lloyd":
        return _fit_lloyd(x, start, settings)
    if settings.backend == "faiss":
        return _fit_faiss(faiss, x, start, settings), None
    return _fit_minibatch(x, start, settings), None


def initial_centroids(x: np.ndarray, settings: KMeansSettings) -> np.ndarray:
    """The centroids k-means starts from (seeded), per ``settings.init``.

    Args:
        x: (n, d) float32 embeddings, n >= k.
        settings: ``init`` and ``seed`` are used.

    Returns:
        float32 (k, d).
    """
    k = settings.n_clusters
    init = settings.init
    if init == "auto":
        init = "stable-k-means++" if k <= AUTO_KMEANS_PP_MAX_CLUSTERS else "random"
    if init == "random":
        return _random_init(x, k, settings.seed)
    rng = np.random.default_rng(settings.seed)
    m = min(x.shape[0], max(3 * k, KMEANS_PP_MIN_SAMPLE))
    sample = x[np.sort(rng.choice(x.shape[0], m, replace=False))] if m < x.shape[0] else x
    if init == "stable-k-means++":
        return _race_kmeans_plus_plus(sample, k, rng)
    from sklearn.cluster import kmeans_plusplus

    # float64: scikit-learn computes float32 distances through chunked float64 copies, which
    # makes k-means++ several times slower than on float64 input.
    centres, _ = kmeans_plusplus(sample.astype(np.float64), k, random_state=settings.seed % 2**32)
    return np.ascontiguousarray(centres, dtype=np.float32)


def _race_kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++-like seeding that a small move of the rows rarely changes.

    Each new centroid is a row drawn with probability ~ D^p, D its distance to the nearest
    centroid so far (p = :data:`STABLE_INIT_POWER`), each draw made as ``argmin(E / D^p)``
    with E ~ Exp(1) per row.

    That is the distribution inverting the cumulative sum would draw from, but a small move of
    the rows changes a draw only when two rows' ratios are that close (module docstring).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    picked = [int(rng.integers(n))]
    d2 = np.maximum(sq + sq[picked[0]] - 2.0 * (x @ x[picked[0]]), 0.0)
    ratio = np.empty(n, dtype=np.float64)
    for _ in range(1, k):
        e = rng.exponential(size=n)
        positive = d2 > 0
        if not positive.any():
            # Every row sits on a centroid (fewer distinct rows than k): repeat one at random;
            # Lloyd moves the duplicate onto the worst-served rows.
            picked.append(int(np.argmin(e)))
            continue
        ratio.fill(np.inf)
        np.divide(e, d2.astype(np.float64) ** (STABLE_INIT_POWER / 2), out=ratio, where=positive)
        j = int(np.argmin(ratio))
        picked.append(j)
        np.minimum(d2, np.maximum(sq + sq[j] - 2.0 * (x @ x[j]), 0.0), out=d2)
    return np.array(x[picked], dtype=np.float32)


def _random_init(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K distinct rows of x, drawn with the seed (distinct rows, not only distinct indices)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(x.shape[0])
    # Duplicate images would make duplicate centroids, one of which stays empty; skip repeats
    # (np.unique on the rows in the drawn order) as long as enough distinct rows exist.
    first = order[: min(x.shape[0], 2 * k)]
    _, keep = np.unique(x[first], axis=0, return_index=True)
    picked = first[np.sort(keep)][:k]
    if picked.shape[0] < k:
        picked = order[:k]
    return np.array(x[picked], dtype=np.float32)


def _fit_lloyd(
    x: np.ndarray, start: np.ndarray, settings: KMeansSettings
) -> tuple[np.ndarray, Assignment]:
    """Lloyd's iterations: assign every row, move each centroid to its members' mean.

    Stops at a fixed point (no label changed: the centroids would not move), when an iteration
    lowers the inertia by less than ``settings.tol``, or after ``settings.max_iter`` updates.
    Returns the centroids and the rows' assignment to them (the last check's).
    """
    from scipy import sparse

    n, k = x.shape[0], start.shape[0]
    c = start.copy()
    rows = np.arange(n)
    ones = np.ones(n, dtype=np.float32)
    previous = 0.0
    labels_before: np.ndarray | None = None
    it = 0
    while True:
        a = _assign(x, c)
        d = a.distances.astype(np.float64)
        current = float(np.dot(d, d))
        changed = -1 if labels_before is None else int((a.labels != labels_before).sum())
        log.debug("lloyd %d: inertia %.6g, %d labels changed", it, current, changed)
        converged = changed == 0 or (it > 0 and previous - current <= settings.tol * previous)
        if converged or it == settings.max_iter:
            log.info(
                "k-means %s after %d iterations: inertia %.6g, %d labels changed in the last",
                "converged" if converged else "stopped",
                it,
                current,
                changed,
            )
            return c, a
        it += 1
        previous, labels_before = current, a.labels
        counts = np.bincount(a.labels, minlength=k)
        # The members' sums as one sparse (k, n) x dense (n, d) product: no (n, d) copy.
        sums = sparse.csr_matrix((ones, (a.labels, rows)), shape=(k, n)) @ x
        full = counts > 0
        c[full] = sums[full] / counts[full, None]
        empty = np.flatnonzero(~full)
        if empty.size:
            # Move empty centroids onto the rows farthest from their centroid (the worst
            # served), so that the k clusters asked for are used; rows on a centroid
            # (duplicates) cannot help.
            far = np.argsort(-a.distances, kind="stable")[: empty.size]
            far = far[a.distances[far] > 0]
            c[empty[: far.size]] = x[far]


def _fit_minibatch(x: np.ndarray, start: np.ndarray, settings: KMeansSettings) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(
        n_clusters=settings.n_clusters,
        init=start,
        n_init=1,
        # With an array init, init_size only sizes the set the init's inertia is checked on
        # (unused with one init): k rows, the smallest scikit-learn accepts without a warning.
        init_size=settings.n_clusters,
        batch_size=settings.batch_size,
        max_iter=settings.max_iter,
        max_no_improvement=settings.max_no_improvement,
        reassignment_ratio=settings.reassignment_ratio,
        compute_labels=False,
        random_state=settings.seed % 2**32,
    )
    km.fit(x)
    return np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ClusteringError(
            "the faiss k-means backend needs faiss-cpu; pip install faiss-cpu, or use the "
            "minibatch backend"
        ) from None
    return faiss


def _fit_faiss(
    faiss: Any, x: np.ndarray, start: np.ndarray, settings: KMeansSettings
) -> np.ndarray:
    km = faiss.Kmeans(
        x.shape[1],
        settings.n_clusters,
        niter=settings.max_iter,
        seed=settings.seed % 2**31,
        # Every point is used (no subsampling) and no warning for few points per centroid:
        # ~5 points per centroid is the regime pruning runs in.
        min_points_per_centroid=1,
        max_points_per_centroid=max(1, -(-x.shape[0] // settings.n_clusters)),
        verbose=False,
    )
    km.train(x, init_centroids=start)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


# --- assignment ------------------------------------------------------------------------------


def assign(x: np.ndarray, centroids: np.ndarray, *, chunk_rows: int | None = None) -> Assignment:
    """Nearest centroid of every row, in memory-bounded chunks.

    Args:
        x: (n, d) embeddings.
        centroids: (k, d) centroids.
        chunk_rows: rows per chunk; by default as many as keep the (rows, k) float32 block
            within :data:`ASSIGN_CHUNK_BYTES`.

    Returns:
        The labels (lowest centroid index on exact ties) and Euclidean distances.

    Raises:
        ClusteringError: if shapes do not match, there are no centroids, or values are not
            finite.
    """
    x = _as_embeddings(x, "embeddings", allow_empty=True)
    c = _as_embeddings(centroids, "centroids")
    if c.shape[1] != x.shape[1]:
        raise ClusteringError(
            f"embeddings of dimension {x.shape[1]} cannot be assigned to centroids of "
            f"dimension {c.shape[1]}; embed with the model the centroids were fitted on"
        )
    if chunk_rows is not None and chunk_rows < 1:
        raise ClusteringError(f"chunk_rows {chunk_rows} must be >= 1")
    return _assign(x, c, chunk_rows)


def _assign(x: np.ndarray, c: np.ndarray, chunk_rows: int | None = None) -> Assignment:
    """:func:`assign` on checked float32 C-contiguous arrays (Lloyd's loop skips the checks)."""
    n, k = x.shape[0], c.shape[0]
    if chunk_rows is None:
        chunk_rows = max(1, ASSIGN_CHUNK_BYTES // (4 * k))
    c_sq = np.einsum("ij,ij->i", c, c)
    # x.(-2c) is exactly -2 (x.c) (a power of two scales without rounding): one pass saved.
    c_m2 = c * np.float32(-2.0)
    labels = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float32)
    block = np.empty((min(chunk_rows, n), k), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        xs = x[start : start + chunk_rows]
        g = block[: xs.shape[0]]
        np.matmul(xs, c_m2.T, out=g)
        # argmin of ||c||^2 - 2 x.c is the nearest centroid; ||x||^2 is added back only for the
        # winner, which saves a pass over the block.
        g += c_sq
        lab = g.argmin(axis=1)
        d2 = g[np.arange(xs.shape[0]), lab] + np.einsum("ij,ij->i", xs, xs)
        # Rounding can leave a tiny negative square for a point on its centroid.
        np.maximum(d2, 0.0, out=d2)
        labels[start : start + xs.shape[0]] = lab
        distances[start : start + xs.shape[0]] = np.sqrt(d2)
    return Assignment(labels=labels, distances=distances)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances of every row to its nearest centroid (float64 sum)."""
    d = assign(x, centroids).distances.astype(np.float64)
    return float(np.dot(d, d))


# --- selection -------------------------------------------------------------------------------


def image_priority(keys: Sequence[str], seed: int) -> np.ndarray:
    """A uniform draw in [0, 1) per image that depends only on the seed and the image's key.

    Args:
        keys: image keys (e.g. the image path relative to the dataset).
        seed: the run seed.

    Returns:
        float64 (n,): the priority of each key (lowest is chosen by the ``"random"`` strategy).
    """
    salt = f"harvest.cluster/{int(seed)}/".encode()
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        digest = hashlib.sha256(salt + str(key).encode()).digest()
        # The top 53 bits make an exactly representable double in [0, 1).
        out[i] = (int.from_bytes(digest[:8], "big") >> 11) * 2.0**-53
    return out


def select_one_per_cluster(
    labels: np.ndarray,
    distances: np.ndarray,
    keys: Sequence[str],
    *,
    n_clusters: int,
    strategy: str,
    seed: int,
    selected: np.ndarray | None = None,
    fill: np.ndarray | None = None,
) -> np.ndarray:
    """Choose one image per cluster.

    Args:
        labels: int (n,) cluster of each image, in [0, n_clusters).
        distances: (n,) distance of each image to its centroid.
        keys: (n,) unique image keys.
        n_clusters: number of clusters (clusters without images stay unselected).
        strategy: ``"random"`` (lowest :func:`image_priority`) or ``"nearest"`` (smallest
            distance); ties by key.
        seed: seed of :func:`image_priority`.
        selected: bool (n,) images already kept; they stay kept and their clusters get no other.
        fill: bool (n,) images that may be newly kept (default: all).

    Returns:
        bool (n,): the kept images.

    Raises:
        ClusteringError: on an unknown strategy, mismatched lengths, duplicate keys, labels out
            of range or a cluster with more than one already selected image.
    """
    if strategy not in STRATEGIES:
        raise ClusteringError(f"unknown selection strategy {strategy!r}; use one of {STRATEGIES}")
    lab = np.asarray(labels, dtype=np.int64)
    n = lab.shape[0]
    dist = np.asarray(distances, dtype=np.float64)
    if lab.ndim != 1 or dist.shape != (n,) or len(keys) != n:
        raise ClusteringError(
            f"{n} labels, {dist.shape[0]} distances and {len(keys)} keys: pass one of each "
            "per image"
        )
    _check_labels(lab, n_clusters)
    key_list = [str(k) for k in keys]
    key_rank = _key_rank(key_list)
    out = _mask(selected, n, "selected", default=False).copy()
    may = _mask(fill, n, "fill", default=True)
    per_cluster = np.bincount(lab[out], minlength=n_clusters)
    if per_cluster.max(initial=0) > 1:
        raise ClusteringError(
            f"cluster {int(per_cluster.argmax())} already has {int(per_cluster.max())} selected "
            "images; pass at most one selected image per cluster"
        )
    cand = np.flatnonzero(may & ~out & (per_cluster[lab] == 0))
    if cand.size == 0:
        return out
    if strategy == "random":
        score = image_priority([key_list[i] for i in cand], seed)
    else:
        score = dist[cand]
    # Sort by (cluster, score, key); the first row of each cluster wins.
    order = np.lexsort((key_rank[cand], score, lab[cand]))
    ordered = cand[order]
    first = np.ones(ordered.shape[0], dtype=bool)
    first[1:] = lab[ordered[1:]] != lab[ordered[:-1]]
    out[ordered[first]] = True
    return out


# --- whole runs ------------------------------------------------------------------------------


def cluster_and_select(
    x: np.ndarray, keys: Sequence[str], *, settings: KMeansSettings, strategy: str
) -> Selection:
    """Fit k-means, assign every image, keep one image per cluster.

    Args:
        x: (n, d) embeddings.
        keys: (n,) unique image keys (drive the random choice, break ties).
        settings: k-means settings (its seed also seeds the random choice).
        strategy: ``"random"`` or ``"nearest"``.

    Returns:
        The selection over the n images.

    Raises:
        ClusteringError: on unusable inputs (see :func:`fit_centroids`,
            :func:`select_one_per_cluster`).
    """
    if strategy not in STRATEGIES:
        raise ClusteringError(f"unknown selection strategy {strategy!r}; use one of {STRATEGIES}")
    x = _as_embeddings(x, "embeddings")
    if len(keys) != x.shape[0]:
        raise ClusteringError(
            f"{x.shape[0]} embeddings but {len(keys)} keys; pass one key per embedding"
        )
    key_list = [str(k) for k in keys]
    # Fit and assign in key order, so that the result does not depend on the caller's row order
    # (the init and the mini-batches draw rows by position).
    order = _key_order(key_list)
    x_sorted = x[order]
    centroids, a_fit = _fit(x_sorted, settings)
    a = assign(x_sorted, centroids) if a_fit is None else a_fit
    labels = np.empty_like(a.labels)
    labels[order] = a.labels
    distances = np.empty_like(a.distances)
    distances[order] = a.distances
    chosen = select_one_per_cluster(
        labels,
        distances,
        key_list,
        n_clusters=settings.n_clusters,
        strategy=strategy,
        seed=settings.seed,
    )
    return Selection.from_arrays(centroids, labels, distances, chosen)


def extend_selection(
    previous: Selection,
    new_x: np.ndarray,
    new_keys: Sequence[str],
    *,
    old_keys: Sequence[str],
    seed: int,
    strategy: str,
    grow: int = 0,
    settings: KMeansSettings | None = None,
) -> Selection:
    """Add new images to a selection without touching the old images' rows.

    Old images keep their cluster, distance and ``selected``. New images are assigned to the
    nearest centroid (the existing ones plus, with ``grow``, new ones fitted on the new images
    only). A cluster gets a newly selected image only if none of its members is selected: first
    among its new members, otherwise (a cluster whose selected image was removed) among its old
    members.

    Args:
        previous: the selection over the old images (rows in the caller's order).
        new_x: (n_new, d) embeddings of the new images.
        new_keys: (n_new,) their keys, distinct from ``old_keys``.
        old_keys: (n_old,) keys of the old images, in ``previous``'s row order.
        seed: seed of the random choice (the run seed).
        strategy: ``"random"`` or ``"nearest"``.
        grow: number of new clusters to fit on the new images (0: none; at most n_new).
        settings: k-means settings for ``grow`` (its ``n_clusters`` is replaced by ``grow``);
            default ``KMeansSettings(n_clusters=grow, seed=seed)``.

    Returns:
        The selection over old rows then new rows, with ``previous.n_clusters + grow`` clusters.

    Raises:
        ClusteringError: on mismatched dimensions or lengths, duplicate keys, ``grow`` < 0 or
            larger than the number of new images.
    """
    if strategy not in STRATEGIES:
        raise ClusteringError(f"unknown selection strategy {strategy!r}; use one of {STRATEGIES}")
    n_old = previous.n_images
    if len(old_keys) != n_old:
        raise ClusteringError(
            f"the previous selection has {n_old} images but {len(old_keys)} old keys were "
            "given; pass the old keys in the selection's row order"
        )
    d = previous.centroids.shape[1]
    new_x = _as_embeddings(new_x, "new embeddings", allow_empty=True, dim=d)
    n_new = new_x.shape[0]
    if len(new_keys) != n_new:
        raise ClusteringError(
            f"{n_new} new embeddings but {len(new_keys)} new keys; pass one key per embedding"
        )
    if grow < 0:
        raise ClusteringError(f"--grow {grow} is negative; ask for 0 or more new clusters")
    if grow > n_new:
        raise ClusteringError(
            f"--grow {grow} is more than the {n_new} new images; ask for at most {n_new} new "
            "clusters"
        )
    centroids = previous.centroids
    if grow:
        grow_settings = (
            KMeansSettings(n_clusters=grow, seed=seed)
            if settings is None
            else replace(settings, n_clusters=grow)
        )
        added = fit_centroids(new_x[_key_order([str(k) for k in new_keys])], grow_settings)
        centroids = np.concatenate([centroids, added]).astype(np.float32, copy=False)
    k_total = int(centroids.shape[0])
    a = assign(new_x, centroids)
    labels = np.concatenate([previous.labels, a.labels])
    distances = np.concatenate([previous.distances, a.distances])
    keys = [*map(str, old_keys), *map(str, new_keys)]
    is_new = np.zeros(n_old + n_new, dtype=bool)
    is_new[n_old:] = True
    chosen = np.concatenate([previous.selected, np.zeros(n_new, dtype=bool)])
    # New members first; old members only where a cluster has no new member to offer.
    for pool in (is_new, ~is_new):
        chosen = select_one_per_cluster(
            labels,
            distances,
            keys,
            n_clusters=k_total,
            strategy=strategy,
            seed=seed,
            selected=chosen,
            fill=pool,
        )
    return Selection.from_arrays(centroids, labels, distances, chosen)


# --- helpers ---------------------------------------------------------------------------------


def _as_embeddings(
    x: np.ndarray, what: str, *, allow_empty: bool = False, dim: int | None = None
) -> np.ndarray:
    """X as C-contiguous float32 (n, d), checked: 2-D, finite, non-empty unless allowed."""
    arr = np.asarray(x)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = "(n, d)" if dim is None else f"(n, {dim})"
        raise ClusteringError(
            f"{what} have shape {arr.shape}, expected {want}; pass one row per image"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ClusteringError(f"{what} are of type {arr.dtype}; pass float32 embeddings")
    if arr.shape[1] == 0 or (arr.shape[0] == 0 and not allow_empty):
        raise ClusteringError(f"{what} are empty ({arr.shape}); embed some images first")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ClusteringError(
            f"{what} have NaN or infinite values (first in row {bad}); re-embed those images"
        )
    return arr


def _check_labels(labels: np.ndarray, n_clusters: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        raise ClusteringError(
            f"cluster labels run from {int(labels.min())} to {int(labels.max())}, outside "
            f"0..{n_clusters - 1}; pass the centroids the labels were assigned to"
        )


def _key_order(keys: Sequence[str]) -> np.ndarray:
    """Row indices that sort the keys; duplicate keys are an error."""
    arr = np.asarray(keys, dtype=object)
    order = np.argsort(arr, kind="stable")
    ranked = arr[order]
    if ranked.size > 1:
        dup = np.flatnonzero(ranked[1:] == ranked[:-1])
        if dup.size:
            raise ClusteringError(
                f"image key {ranked[dup[0]]!r} appears more than once; give every image a "
                "unique key"
            )
    return order


def _key_rank(keys: Sequence[str]) -> np.ndarray:
    """Rank of each key in sorted order; duplicate keys are an error."""
    order = _key_order(keys)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    return rank


def _mask(m: np.ndarray | None, n: int, what: str, *, default: bool) -> np.ndarray:
    if m is None:
        return np.full(n, default, dtype=bool)
    arr = np.asarray(m)
    if arr.shape != (n,) or arr.dtype != bool:
        raise ClusteringError(
            f"{what} is {arr.dtype} of shape {arr.shape}; pass a bool array with one entry per "
            "image"
        )
    return arr


def _frozen(a: np.ndarray) -> np.ndarray:
    # Selections cross module borders: read-only arrays keep them as frozen as the dataclass.
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a
