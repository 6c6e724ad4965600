r"""The transition-path metrics of the machine-learning TPS literature, as pure functions of a path batch.

For a batch of paths :math:`\tau_n = (x_{n,0}, \dots, x_{n,K})` (`fepy.Paths`, configurations
flattened to ``(3 atoms,)`` in nm) that should end in the structure :math:`y` (``(atoms, 3)``, nm):

* **RMSD** (`final_rmsd`): of the final frame to :math:`y` after Kabsch superposition, over the
  heavy atoms (TPS-DPS's ``Metric.rmsd``, reported in Å as the papers do).
* **THP**, target hit percentage (`dihedral_hit`, `transition_metrics`): the share of final
  frames with :math:`\Delta\phi^2 + \Delta\psi^2 < 0.75^2\ \text{rad}^2`, the differences to
  :math:`y`'s own backbone dihedrals wrapped to :math:`(-\pi, \pi]` (PIPS, TPS-DPS).
* **ETS**, energy of the transition state: the mean over hitting paths of
  :math:`\max_k U(x_{n,k})` (kJ/mol); NaN when no path hits.
* **EPD**, expected pairwise distance (`pairwise_distance_error`): the mean over paths of
  :math:`\frac{1}{N^2}\sum_{i,j}(|x_i - x_j| - |y_i - y_j|)^2` over all N atoms of the final frame
  (nm², invariant to rigid motions without alignment). This is the pairwise-distance cost of
  PIPS's released code (``Dynamics/AlanineDynamics.py``, ``loss_func='pairwise_dist'``), which we
  take to define the EPD column of PIPS's results; the paper's own formula was not available here.
* **LL**: the mean log-likelihood of the paths' noise increments under the reference dynamics
  (`fepy.PathMeasure.log_likelihood`).
* **energy evaluations**: potential-energy (force) evaluations spent; the caller counts them
  (training: ``trajectories x steps`` per step, `fepy.PathKL`'s ``energy_evals``).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ...targets.path import PathMeasure, Paths
from .molecular import dihedral, rmsd

HIT_RADIUS = 0.75
"""The THP criterion's radius in the (phi, psi) plane, rad (PIPS, TPS-DPS)."""


def wrap_angle(angle: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch"]:
    r"""An angle difference wrapped to :math:`(-\pi, \pi]` (rad)."""
    angle = jnp.asarray(angle)
    return jnp.pi - jnp.mod(jnp.pi - angle, 2 * jnp.pi)


def dihedral_distance(
    x: Float[Array, " dim"], reference: Float[Array, "atoms 3"], phi: Int[ArrayLike, " 4"], psi: Int[ArrayLike, " 4"]
) -> Float[Array, ""]:
    r""":math:`\sqrt{\Delta\phi^2 + \Delta\psi^2}` (rad) between configuration ``x`` (flat, nm) and ``reference``."""
    atoms = jnp.stack([jnp.asarray(phi), jnp.asarray(psi)])
    delta = wrap_angle(dihedral(x.reshape(-1, 3), atoms) - dihedral(reference, atoms))
    return jnp.sqrt(jnp.sum(delta**2))


def dihedral_hit(
    x: Float[Array, " dim"],
    reference: Float[Array, "atoms 3"],
    phi: Int[ArrayLike, " 4"],
    psi: Int[ArrayLike, " 4"],
    radius: float = HIT_RADIUS,
) -> Bool[Array, ""]:
    r"""Whether :math:`\Delta\phi^2 + \Delta\psi^2 < r^2` between ``x`` and ``reference`` (the THP criterion)."""
    return dihedral_distance(x, reference, phi, psi) < radius


def final_rmsd(
    paths: Paths, reference: Float[Array, "atoms 3"], atoms: Int[ArrayLike, " k"] | None = None
) -> Float[Array, " n"]:
    """The RMSD (nm) of each path's final frame from ``reference`` after Kabsch superposition of ``atoms``
    (default all; the papers use the heavy atoms)."""
    index = np.arange(reference.shape[0]) if atoms is None else np.asarray(atoms)
    return jax.vmap(lambda x: rmsd(x.reshape(-1, 3)[index], reference[index]))(paths.final)


def pairwise_distance_error(paths: Paths, reference: Float[Array, "atoms 3"]) -> Float[Array, " n"]:
    r""":math:`\frac{1}{N^2}\sum_{i,j}(|x_i - x_j| - |y_i - y_j|)^2` (nm²) of each final frame (module docstring)."""

    def distances(y):
        diff = y[:, None, :] - y[None, :, :]
        r2 = jnp.sum(diff**2, axis=-1)
        return jnp.sqrt(jnp.where(r2 > 0, r2, 1.0)) * (r2 > 0)

    target = distances(reference)
    return jax.vmap(lambda x: jnp.mean((distances(x.reshape(-1, 3)) - target) ** 2))(paths.final)


def transition_state_energy(measure: PathMeasure, paths: Paths, hit: Bool[ArrayLike, " n"]) -> tuple[float, float]:
    r"""ETS: the mean and standard deviation over hitting paths of :math:`\max_k U(x_{n,k})` (unit of U);
    NaN when no path hits."""
    peak = np.asarray(jnp.max(measure.energies(paths), axis=1))[np.asarray(hit, bool)]
    if not peak.size:
        return float("nan"), float("nan")
    return float(peak.mean()), float(peak.std())


def transition_metrics(
    measure: PathMeasure,
    paths: Paths,
    reference: Float[Array, "atoms 3"],
    phi: Int[ArrayLike, " 4"],
    psi: Int[ArrayLike, " 4"],
    heavy: Int[ArrayLike, " k"] | None = None,
    radius: float = HIT_RADIUS,
) -> dict:
    """The field's metrics of ``paths`` (module docstring) as floats; the standard deviations over paths too.

    Returns ``rmsd`` (Å, heavy atoms), ``thp`` (%), ``ets`` (kJ/mol, NaN without hits),
    ``epd`` (nm²), ``log_likelihood`` (mean over paths), ``hits`` and ``paths``, and
    ``metric_energy_evals``: the n (steps + 1) potential evaluations that ETS itself costs.
    """
    if paths.positions.shape[-1] != reference.size:
        raise ValueError(f"paths have dim {paths.positions.shape[-1]}, the reference {reference.size} coordinates")
    hit = np.asarray(jax.vmap(lambda x: dihedral_hit(x, reference, phi, psi, radius))(paths.final))
    rmsd_a = 10.0 * np.asarray(final_rmsd(paths, reference, heavy))
    ets, ets_std = transition_state_energy(measure, paths, hit)
    epd = np.asarray(pairwise_distance_error(paths, reference))
    ll = np.asarray(measure.log_likelihood(paths))
    n = len(hit)
    return dict(
        rmsd=float(rmsd_a.mean()), rmsd_std=float(rmsd_a.std()),
        thp=100.0 * float(hit.mean()), hits=int(hit.sum()), paths=n,
        ets=ets, ets_std=ets_std,
        epd=float(epd.mean()), epd_std=float(epd.std()),
        log_likelihood=float(ll.mean()), log_likelihood_std=float(ll.std()),
        metric_energy_evals=n * paths.positions.shape[1],
    )
