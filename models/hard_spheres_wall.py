r"""Hard spheres at a planar hard wall by fundamental measure theory: the contact theorem.

Spheres of diameter σ = 1 in contact with a bulk of packing fraction η = πρ_bσ³/6 (kT
units, lengths in σ, densities per σ³); the wall stops the sphere centres at z = 0, the
left edge of the grid, and the fluid continues as bulk beyond z = ``length`` on the
right. The Picard (Fisher-Rao) iteration with Anderson mixing finds the equilibrium
ρ(z) of White Bear II (or Rosenfeld) FMT. The exact contact theorem (the wall sum rule)
says

    ρ(0⁺) = βp,

with βp from the functional's bulk equation of state: Carnahan-Starling for White Bear
II, βp = ρ(1 + η + η² - η³)/(1 - η)³, and the Percus-Yevick compressibility route for
Rosenfeld, βp = ρ(1 + η + η²)/(1 - η)³. The contact density is extrapolated from the
first four grid points (`fepy.families.grid.contact_density`); the discretisation error
is O(dx²): at the default η = 0.4 and dx = 0.005 it is about 5e-5 βp
(``tests/test_dft_fmt.py`` extrapolates to dx -> 0).
"""

import jax.numpy as jnp
import numpy as np

import fepy
from fepy.apps.dft import FMT, rosenfeld, white_bear_ii
from fepy.families.grid import contact_density

FUNCTIONALS = dict(white_bear_ii=white_bear_ii, rosenfeld=rosenfeld)

DEFAULTS = dict(
    packing_fraction=0.4, functional="white_bear_ii", length=10.0, dx=0.005, steps=300, mixing=0.1, anderson=8,
)


def beta_pressure(functional: str, eta: float) -> float:
    """βp (σ⁻³) of the bulk, in closed form: Carnahan-Starling or Percus-Yevick (compressibility)."""
    rho = 6.0 * eta / np.pi
    quartic = -(eta**3) if functional == "white_bear_ii" else 0.0
    return rho * (1.0 + eta + eta**2 + quartic) / (1.0 - eta) ** 3


def _check(config) -> dict:
    c = {**DEFAULTS, **config}
    if c["functional"] not in FUNCTIONALS:
        raise ValueError(f"functional must be one of {sorted(FUNCTIONALS)}, got {c['functional']!r}")
    if not 0.0 < c["packing_fraction"] < 1.0:
        raise ValueError(f"packing_fraction must be in (0, 1), got {c['packing_fraction']!r}")
    return c


def reference(config) -> dict:
    c = _check(config)
    return dict(
        beta_pressure=beta_pressure(c["functional"], c["packing_fraction"]), packing_fraction=c["packing_fraction"]
    )


def observables(target, family) -> dict:
    """ρ(0⁺), its relative deviation from the functional's βp, η and the adsorption Γ = ∫(ρ - ρ_b)dz (σ⁻²)."""
    rho_b = float(target.rho_bulk)
    contact = float(contact_density(family.rho))
    return dict(
        contact_density=contact,
        contact_theorem_error=contact / float(target.excess.bulk_pressure(rho_b)) - 1.0,
        packing_fraction=float(target.excess.packing_fraction(rho_b)),
        adsorption=float(family.grid.integrate(family.rho - rho_b)),
    )


def build(config):
    c = _check(config)
    n = int(round(c["length"] / c["dx"]))
    grid = fepy.Grid(n, c["dx"], "empty", "bulk")
    fmt = FMT(FUNCTIONALS[c["functional"]])
    rho_b = 6.0 * c["packing_fraction"] / np.pi
    target = fepy.GrandPotential.from_bulk_density(grid, fmt, rho_b, jnp.zeros(n))
    family = fepy.GridDensity(jnp.full(n, rho_b), grid)
    return fepy.Problem(target, family, fepy.Picard(mixing=c["mixing"], anderson=c["anderson"]), c["steps"])
