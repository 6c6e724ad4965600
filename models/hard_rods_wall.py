r"""Hard rods at a hard wall, in contact with bulk: Percus's exact functional against exact results.

Rods of length σ = 1 (kT units, lengths in σ, densities per σ) in equilibrium with a
bulk of packing fraction η = ρ_bσ; the wall stops the rod centres at x = 0, the left
edge of the grid, and the fluid continues as bulk beyond x = ``length``. Percus's
functional is exact, so the solved profile must be the exact one (`wall_density`: rod k
sits at kσ plus a Gamma(k + 1, βp) distance), up to the grid's discretisation error, with

    ρ(0⁺) = βp = ρ_b / (1 - η)            (contact theorem, Tonks pressure),
    Γ = ∫(ρ - ρ_b) dx = η + ρ_b²/(2 βp²) - 1/2   (adsorption, renewal theorem).

``solver = "picard"`` takes the Fisher-Rao route (mixed Picard + Anderson),
``"ddft"`` the Wasserstein one (dynamic DFT, time step ``dt``; it needs many more steps,
e.g. ``--steps 3000`` at the defaults). The contact density is extrapolated from the
first four grid points (`fepy.families.grid.contact_density`); its error from the grid
is O(dx²) (``tests/test_dft_hard_rods.py`` extrapolates to dx -> 0): at the defaults
(η = 0.5, dx = 0.01) ρ(0⁺)/βp - 1 = 2.2e-5 and max |ρ - ρ_exact| = 2.8e-5.

Dense fluids are hard at a wall: the first layer is close packed up to
1 - n1 ≈ e^{-βpσ}, so the grid error near the wall grows roughly like dx e^{βpσ}
(at η = 0.85 and dx = 0.01 the contact density is 26 % high) and the Picard Jacobian
gets eigenvalues up to ~1e5 at η = 0.9. From the uniform start, Picard with Anderson
(e.g. ``--set mixing=0.02``) converges up to η ≈ 0.88 (continued from a lower η; 0.85
directly); at η = 0.9 it does not.
"""

import jax.numpy as jnp
import numpy as np

import fepy
from fepy.apps.dft import HardRods, tonks_pressure, wall_adsorption, wall_density
from fepy.families.grid import contact_density

DEFAULTS = dict(
    packing_fraction=0.5, length=10.0, dx=0.01, steps=300, solver="picard", mixing=0.1, anderson=10, dt=0.1,
)
SOLVERS = ("picard", "ddft")


def _check(config) -> dict:
    c = {**DEFAULTS, **config}
    if not 0.0 < c["packing_fraction"] < 1.0:
        raise ValueError(f"packing_fraction must be in (0, 1), got {c['packing_fraction']!r}")
    if not (c["dx"] > 0 and c["length"] >= 4 * c["dx"]):
        raise ValueError(f"need dx > 0 and length >= 4 dx, got dx={c['dx']!r}, length={c['length']!r}")
    if c["solver"] not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {c['solver']!r}")
    return c


def _grid(c) -> fepy.Grid:
    return fepy.Grid(int(round(c["length"] / c["dx"])), c["dx"], "empty", "bulk")


def reference(config) -> dict:
    """Exact βp (Tonks), ρ(0⁺) = βp, Γ, and the exact (semi-infinite) profile at the grid points."""
    c = _check(config)
    eta = c["packing_fraction"]
    beta_p = float(tonks_pressure(eta))
    x = np.asarray(_grid(c).points)
    return dict(
        beta_pressure=beta_p, contact_density=beta_p, adsorption=wall_adsorption(beta_p), packing_fraction=eta,
        profile=dict(x=x, rho=wall_density(x, beta_p), label="exact (isobaric rods)"),
    )


def observables(target, family) -> dict:
    """ρ(0⁺) and its relative deviation from βp, Γ (rods per wall) and max |ρ - ρ_exact| over the grid."""
    rho_b = float(target.rho_bulk)
    beta_p = float(target.excess.bulk_pressure(rho_b))
    contact = float(contact_density(family.rho))
    exact = wall_density(np.asarray(family.grid.points), beta_p)
    return dict(
        contact_density=contact,
        contact_theorem_error=contact / beta_p - 1.0,
        adsorption=float(family.grid.integrate(family.rho - rho_b)),
        profile_error=float(np.max(np.abs(np.asarray(family.rho) - exact))),
    )


def build(config):
    c = _check(config)
    grid = _grid(c)
    eta = c["packing_fraction"]
    target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), eta, jnp.zeros(grid.n))
    family = fepy.GridDensity(jnp.full(grid.n, eta), grid)
    if c["solver"] == "picard":
        solver = fepy.Picard(mixing=c["mixing"], anderson=c["anderson"])
    else:
        solver = fepy.DynamicDFT(dt=c["dt"])
    return fepy.Problem(target, family, solver, c["steps"])
