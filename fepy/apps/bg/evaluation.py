r"""Evaluating a particle Boltzmann generator the way the papers do, on the centre-of-mass-free subspace.

For a trained density :math:`q` (a `fepy.CNF`) on the target :math:`p \propto e^{-\beta U}`:

* importance weights :math:`\log w_i = -\beta U(x_i) - \log q(x_i)` of :math:`n` fresh samples
  :math:`x_i \sim q`; the Kish effective sample size :math:`(\sum w)^2/\sum w^2` (reported as
  a fraction of :math:`n`, as Klein et al. 2023 and Midgley et al. 2023 report "ESS" in %),
  :math:`\log\hat Z = \log\frac1n\sum_i w_i` with its delta-method standard error, and
  self-normalised reweighted observables;
* the negative log-likelihood of held-out equilibrium samples, :math:`-\frac1m\sum_j\log q(y_j)`
  (Köhler et al. 2020; Garcia Satorras et al. 2021), with its standard error;
* because the equilibrium samples come with an SMC estimate of :math:`\log Z`, also the
  entropy of the target :math:`H(p) = \beta E_p[U] + \log Z` and the forward KL
  :math:`\mathrm{KL}(p\|q) = \mathrm{NLL} - H(p) \ge 0`: the NLL's distance from its floor.

Every density is the one on the centre-of-mass-free subspace with the measure of orthonormal
coordinates (`fepy.apps.bg.particles`), so NLLs depend on that convention (a density on
:math:`\mathbb{R}^{ND}` with a Gaussian centre of mass would add a constant).
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..._estimators import kish_ess, log_z_and_stderr, reweighted_mean
from ...families.density import AbstractDensity
from .particles import EquilibriumSamples, _ParticleEnergy


@eqx.filter_jit
def _sample_chunk(flow, key, n):
    return flow.sample_and_log_prob(key, n)


@eqx.filter_jit
def _log_prob_chunk(flow, x):
    return flow.log_prob(x)


def sample_in_chunks(flow: AbstractDensity, key: PRNGKeyArray, n: int, chunk: int = 250):
    """``n`` samples and their log q, drawn ``chunk`` at a time (one compiled program; an
    adaptive ODE solve under ``vmap`` runs as long as its slowest row, so smaller batches
    waste less)."""
    starts = range(0, n, chunk)
    parts = [_sample_chunk(flow, k, min(chunk, n - i)) for i, k in zip(starts, jax.random.split(key, len(starts)))]
    return jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts])


def log_prob_in_chunks(flow: AbstractDensity, x: Float[Array, "m dim"], chunk: int = 250) -> Float[Array, " m"]:
    """``flow.log_prob`` of ``x``, ``chunk`` rows at a time."""
    return jnp.concatenate([_log_prob_chunk(flow, x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


class Analysis(eqx.Module):
    """What `analyze` computes once for the observables and the plots."""

    samples: Float[Array, "n dim"]  # x_i ~ q
    log_w: Float[Array, " n"]  # -beta U(x_i) - log q(x_i)
    sample_energy: Float[Array, " n"]  # U(x_i)
    test: Float[Array, "m dim"]  # held-out equilibrium samples
    test_log_q: Float[Array, " m"]  # log q(y_j)
    test_energy: Float[Array, " m"]  # U(y_j)


def analyze(target: _ParticleEnergy, flow: AbstractDensity, test: Float[Array, "m dim"], *, n: int,
            key: PRNGKeyArray, chunk: int = 250) -> Analysis:
    """Fresh samples of ``flow`` with their importance weights, and the flow's log-density of the
    held-out samples ``test``."""
    x, log_q = sample_in_chunks(flow, key, n, chunk)
    energy = jax.vmap(target.energy)(x)
    return Analysis(samples=x, log_w=-target.beta * energy - log_q, sample_energy=energy, test=test,
                    test_log_q=log_prob_in_chunks(flow, test, chunk), test_energy=jax.vmap(target.energy)(test))


def metrics(target: _ParticleEnergy, analysis: Analysis, reference: EquilibriumSamples | None = None) -> dict:
    """The figures of the module docstring as Python floats: ``ess`` (Kish, count), ``ess_fraction``,
    ``log_z``, ``log_z_stderr`` (importance sampling), ``nll``, ``nll_stderr``, the reweighted
    mean energy ``energy_reweighted`` (with ``_stderr``) beside the flow's own mean ``energy_flow``
    and the held-out samples' ``energy_md`` (with ``_stderr``), and, given the ``reference``
    samples' SMC log Z, ``reference_log_z``, ``entropy`` and ``kl_forward``."""
    a = analysis
    n, m = a.log_w.shape[0], a.test_log_q.shape[0]
    log_w = jnp.where(jnp.isnan(a.log_w), -jnp.inf, a.log_w)
    log_z, log_z_stderr = log_z_and_stderr(log_w)
    ess = kish_ess(log_w)
    finite = jnp.isfinite(log_w)
    reweighted, reweighted_stderr = reweighted_mean(log_w, jnp.where(finite, a.sample_energy, 0.0))
    nll = -jnp.mean(a.test_log_q)
    out = dict(
        ess=ess, ess_fraction=ess / n, log_z=log_z, log_z_stderr=log_z_stderr,
        nll=nll, nll_stderr=jnp.std(a.test_log_q, ddof=1) / jnp.sqrt(m),
        energy_reweighted=reweighted, energy_reweighted_stderr=reweighted_stderr,
        energy_flow=jnp.mean(a.sample_energy), energy_md=jnp.mean(a.test_energy),
        energy_md_stderr=jnp.std(a.test_energy, ddof=1) / jnp.sqrt(m),
        samples=n, test_samples=m,
    )
    if reference is not None:
        entropy = target.beta * out["energy_md"] + reference.log_z
        out.update(reference_log_z=reference.log_z, reference_log_z_stderr=reference.log_z_stderr,
                   entropy=entropy, kl_forward=nll - entropy)
    return {k: float(v) for k, v in out.items()}


def _density_steps(ax, values, value_range, weights=None, **style) -> None:
    """A step histogram normalised by the total weight of all ``values`` (also those out of range)."""
    weights = np.full(values.shape, 1.0 / values.size) if weights is None else weights / np.sum(weights)
    counts, edges = np.histogram(values, bins=80, range=value_range, weights=weights)
    ax.stairs(counts / np.diff(edges), edges, linewidth=1.5, **style)


def plot(target: _ParticleEnergy, analysis: Analysis, path: str | Path, title: str) -> None:
    """Two panels, as the papers show them: the histogram of all pair distances and of the energy,
    for the held-out equilibrium samples, the flow's samples and the flow's samples reweighted
    by :math:`w_i`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = analysis
    w = np.asarray(jax.nn.softmax(jnp.where(jnp.isnan(a.log_w), -jnp.inf, a.log_w)), np.float64)
    d_md = np.asarray(target.pair_distances(a.test)).ravel()
    d_flow = np.asarray(target.pair_distances(a.samples))
    e_md, e_flow = np.asarray(a.test_energy), np.asarray(a.sample_energy)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    d_range = (0.0, float(np.quantile(d_md, 0.999)) * 1.1)
    lo, hi = np.quantile(e_md, [0.001, 0.999])
    e_range = (float(lo - 0.2 * (hi - lo)), float(hi + 0.2 * (hi - lo)))
    for ax, md, flow, weights, value_range in ((axes[0], d_md, d_flow.ravel(), np.repeat(w, d_flow.shape[1]), d_range),
                                               (axes[1], e_md, e_flow, w, e_range)):
        _density_steps(ax, md, value_range, color="k", label="MCMC (held out)")
        _density_steps(ax, flow, value_range, color="C0", label="flow")
        _density_steps(ax, flow, value_range, weights, color="C3", linestyle="--", label="flow, reweighted")
    axes[0].set_xlabel("pair distance")
    axes[1].set_xlabel("energy U")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
