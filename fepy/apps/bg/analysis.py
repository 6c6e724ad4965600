r"""What a molecular Boltzmann generator is judged by: dihedral free-energy surfaces, their
histogram KL divergence from a reference, and reweighted free-energy differences between states.

The (phi, psi) density is a normalised 2-D histogram on :math:`[-\pi, \pi)^2` (optionally
weighted), and the distance of a model's histogram :math:`q` from a reference :math:`p` is the
discretised KL divergence of the FAB paper's evaluation (Midgley et al., ICLR 2023; fab-torch
``fab/utils/aldp.py``: 64 x 64 bins, :math:`\epsilon = 10^{-10}`):

.. math:: \mathrm{KL}(p\,\|\,q) \approx \sum_{\rm bins} p_b \log\frac{p_b + \epsilon}{q_b + \epsilon}\;\Delta A ,

with :math:`p_b, q_b` densities (per rad²) and :math:`\Delta A` the bin area. A bin that the
model misses costs :math:`p_b \Delta A \log(p_b/\epsilon)`, about 20 times its mass: the figure
punishes missing mass hard and depends on the sample sizes. `histogram_kl_floor` is the figure
a perfect sampler would score with n independent samples (n draws from the reference
histogram itself): the floor against which a model's n raw samples are judged. (Weighted samples
cover the bins of all n samples, not of ESS ones: their figure is not that of ESS draws.)
"""

import math

import numpy as np
from jaxtyping import ArrayLike, Float

FAB_BINS = 64
FAB_EPSILON = 1e-10


def dihedral_histogram(
    phi: Float[ArrayLike, " n"], psi: Float[ArrayLike, " n"], weights: Float[ArrayLike, " n"] | None = None,
    bins: int = FAB_BINS,
) -> Float[np.ndarray, "bins bins"]:
    """The normalised density (per rad²) of (phi, psi) on [-pi, pi)² in ``bins`` x ``bins`` bins,
    phi along the first axis; ``weights`` (>= 0, e.g. importance weights) optional."""
    h, _, _ = np.histogram2d(np.asarray(phi), np.asarray(psi), bins, range=[[-math.pi, math.pi]] * 2,
                             weights=None if weights is None else np.asarray(weights), density=True)
    return h


def histogram_kl(p: Float[ArrayLike, "bins bins"], q: Float[ArrayLike, "bins bins"], epsilon: float = FAB_EPSILON
                 ) -> float:
    """The discretised KL(p || q) of two `dihedral_histogram` densities (module docstring)."""
    p, q = np.asarray(p), np.asarray(q)
    area = (2 * math.pi / p.shape[0]) * (2 * math.pi / p.shape[1])
    return float(np.sum(p * np.log((p + epsilon) / (q + epsilon))) * area)


def free_energy_difference(
    log_w: Float[ArrayLike, " n"], in_a: Float[ArrayLike, " n"], in_b: Float[ArrayLike, " n"], kt: float
) -> tuple[float, float]:
    r""":math:`\Delta F = F_B - F_A = -k_BT \log(P_B / P_A)` from weighted samples, with its
    delta-method standard error.

    :math:`P_S = \sum_i \bar w_i 1_S(x_i)` with the normalised weights :math:`\bar w_i \propto
    e^{\log w_i}` (equal weights for unweighted samples: pass zeros). The memberships
    ``in_a``, ``in_b`` are :math:`1_S(x_i)` (booleans), or for blocks of correlated samples
    (e.g. independent MD runs, equal weights) the fraction of each block in the state. The ratio
    :math:`R = P_B/P_A` is a ratio of self-normalised means; its influence function gives
    :math:`\mathrm{se}(\log R)^2 = \sum_i \bar w_i^2 (1_B(x_i)/P_B - 1_A(x_i)/P_A)^2` (for
    independent samples; correlated ones, e.g. an MD trajectory, need blocks instead).
    ``kt`` sets the unit of :math:`\Delta F`. Infinite when a state has no weight.
    """
    log_w = np.asarray(log_w, np.float64)
    a, b = np.asarray(in_a, np.float64), np.asarray(in_b, np.float64)
    if not (log_w.shape == a.shape == b.shape and log_w.ndim == 1):
        raise ValueError(f"log_w, in_a and in_b must be 1-D of one length, got {log_w.shape}, {a.shape}, {b.shape}")
    finite = np.isfinite(log_w)
    w = np.where(finite, np.exp(log_w - np.max(log_w[finite], initial=-np.inf)), 0.0)
    w = w / np.sum(w)
    p_a, p_b = np.sum(w * a), np.sum(w * b)
    if p_a == 0 or p_b == 0:
        return (math.inf if p_b == 0 else -math.inf), math.nan
    se = np.sqrt(np.sum(w**2 * (b / p_b - a / p_a) ** 2))
    return float(-kt * np.log(p_b / p_a)), float(kt * se)


def histogram_kl_floor(p: Float[ArrayLike, "bins bins"], n: int, seed: int = 0, draws: int = 16,
                       epsilon: float = FAB_EPSILON) -> tuple[float, float]:
    """Mean and standard deviation over ``draws`` of KL(p || p_n), p_n the histogram of ``n``
    independent draws from the `dihedral_histogram` p itself (multinomial counts of its bins):
    the KL of a sampler that is exactly p, limited only by its n samples."""
    p = np.asarray(p)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"histogram_kl_floor n must be a positive integer, got {n!r}")
    area = (2 * math.pi / p.shape[0]) * (2 * math.pi / p.shape[1])
    mass = (p * area).ravel()
    rng = np.random.default_rng(seed)
    values = [histogram_kl(p, rng.multinomial(n, mass / mass.sum()).reshape(p.shape) / (n * area), epsilon)
              for _ in range(draws)]
    return float(np.mean(values)), float(np.std(values, ddof=1))
