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
1 - n1 ≈ e^{-βpσ} (1.2e-4 at η = 0.9), and past x = R (the window's edge on the contact
plane) 1 - n1 grows from that to βp dx within one cell. The midpoint rule for Φ
(``quadrature = 1``) misjudges that cell's force on the first layer by O(1) until
dx ≪ e^{-βpσ}/βp, whatever the density does at the wall (`fepy.Grid`). Measured
ρ(0⁺)/βp - 1 at η = 0.85 for dx = 0.02, 0.01, 0.005, 0.0025: +26.5, +26.4, +22.8,
+15.6 %; at η = 0.9, dx = 0.01: +28 % (11.49 against βp = 9). More Gauss points per cell
(``--set quadrature=q``) resolve it, and the error becomes first order in dx: at
η = 0.85, q = 8: -1.47, -0.76, -0.38, -0.17 %; at η = 0.9, q = 4: -4.0, -3.0, -2.6,
-2.4 % (still limited by q), q = 8: -3.0, -1.9, -1.3, -0.96 %; q = 32 (dx = 0.01, 0.005,
0.0025, length 20): -1.21, -0.63, -0.32 %, observed order 0.95, extrapolated to dx -> 0
within 2.3e-4 of βp (``tests/test_dft_hard_rods.py``).

The Picard Jacobian at η = 0.9 has eigenvalues up to ~1e5 (the first layer's
normalisation), and Picard is stable in bulk only for mixing < 2(1 - η)². From the
uniform fluid, ``--set packing_fraction=0.9 --set quadrature=4 --set mixing=0.01
--set anderson=20 --steps 3000`` converges (residual 1e-9 after 1496 steps), but not at
every setting (with ``anderson=10`` it stalls at 1e-8; at ``dx=0.005`` with
``mixing=0.005`` it does not converge). The robust route is `fepy.continuation` in βp
from η = 0.5, each stage started from the one before: residual 1e-10 after 2100-3400
steps in all, in each of 19 runs with dx = 0.02 to 0.0025 and q = 4 to 32.
"""

import jax.numpy as jnp
import numpy as np

import fepy
from fepy.apps.dft import HardRods, tonks_pressure, wall_adsorption, wall_density
from fepy.families.grid import contact_density

DEFAULTS = dict(
    packing_fraction=0.5, length=10.0, dx=0.01, quadrature=1, steps=300, solver="picard", mixing=0.1, anderson=10,
    dt=0.1,
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
    return fepy.Grid(int(round(c["length"] / c["dx"])), c["dx"], "empty", "bulk", quadrature=c["quadrature"])


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
