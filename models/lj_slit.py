r"""A Lennard-Jones fluid in a slit between two hard walls: FMT repulsion plus WCA mean-field attraction.

The fluid (kT units, lengths in σ, densities per σ³) is hard spheres of diameter σ by
White Bear II FMT plus the attraction of the Lennard-Jones potential beyond its minimum,
truncated at ``cutoff``, in mean field (`fepy.apps.dft.MeanFieldAttraction`), at
temperature T* = kT/ε. Its bulk equation of state is Carnahan-Starling plus the van der
Waals term, βp = βp_CS(ρ) + ½ρ²∫βu_att d³r, with a mean-field critical point at
T* = 1.33, ρ = 0.249 (cutoff 2.5σ). The defaults, T* = 1.5 and ρ_b = 0.65, are a dense
supercritical state; T* = 1.0, ρ_b = 0.75 is a liquid.

The slit, open to a reservoir at the chemical potential of ρ_b, holds the sphere
centres in 0 < z < H (hard walls at both edges of the grid). Three slits, H - dz, H and
H + dz, are solved at once (a batch: the outer cells of one grid blocked by an infinite
potential), which gives the exact sum rule of the slit

    ρ(0⁺) = -∂(βΩ/A)/∂H = βp + βf_s,

the contact density equal to the force per area on a wall, βp plus the solvation force
f_s, which vanishes for wide slits (the contact theorem of a single wall); here the
derivative is the centred difference of βΩ over the three slits. ``contact_density``,
``wall_pressure`` (-∂βΩ/∂H) and the reference ``beta_pressure`` of the bulk are written
with the number and adsorption of the slit of width H; both sides of the sum rule carry
an O(dz²) discretisation error (about 1e-5 at dz = 0.01).
"""

import jax.numpy as jnp
import numpy as np

import fepy
from fepy.apps.dft import FMT, MeanFieldAttraction, integrated_attraction
from fepy.families.grid import contact_density

DEFAULTS = dict(temperature=1.5, density=0.65, width=10.0, dz=0.01, cutoff=2.5, steps=200, mixing=0.1, anderson=8)


def _check(config) -> dict:
    c = {**DEFAULTS, **config}
    if not 0.0 < c["density"] < 6.0 / np.pi:
        raise ValueError(f"density must be in (0, 6/pi) (packing fraction below 1), got {c['density']!r}")
    if not (c["dz"] > 0 and c["width"] >= 8 * c["dz"]):
        raise ValueError(f"need dz > 0 and width >= 8 dz, got dz={c['dz']!r}, width={c['width']!r}")
    return c


def reference(config) -> dict:
    """βp of the bulk in closed form: Carnahan-Starling plus ½ρ²∫βu_att (σ⁻³)."""
    c = _check(config)
    rho, eta = c["density"], np.pi * c["density"] / 6.0
    carnahan_starling = rho * (1.0 + eta + eta**2 - eta**3) / (1.0 - eta) ** 3
    return dict(
        beta_pressure=carnahan_starling + 0.5 * rho**2 * integrated_attraction(c["cutoff"]) / c["temperature"],
        rho_bulk=rho,
    )


def observables(target, family) -> dict:
    """The slit of width H (batch entry 1): ρ(0⁺), -∂βΩ/∂H, N and Γ per wall, ρ at the middle."""
    rho, grid = family.rho, family.grid
    omega = target.omega(rho)
    slit = rho[1, : grid.n - 1]  # H = (n - 1) dz: the last cell is blocked
    rho_b = float(target.rho_bulk)
    number = float(grid.integrate(slit))
    return dict(
        contact_density=float(contact_density(slit)),
        contact_density_right=float(contact_density(slit, "right")),
        wall_pressure=float(-(omega[2] - omega[0]) / (2 * grid.dx)),
        midpoint_density=float(0.5 * (slit[(grid.n - 2) // 2] + slit[(grid.n - 1) // 2])),
        slit_number=number,
        adsorption=0.5 * (number - rho_b * (grid.n - 1) * grid.dx),
    )


def build(config):
    c = _check(config)
    cells = int(round(c["width"] / c["dz"]))
    grid = fepy.Grid(cells + 1, c["dz"], "empty", "empty")
    blocked = np.arange(cells + 1)[None, :] >= np.array([cells - 1, cells, cells + 1])[:, None]
    beta_external = jnp.where(jnp.asarray(blocked), jnp.inf, 0.0)  # slits of cells - 1, cells, cells + 1 points
    fluid = FMT() + MeanFieldAttraction(temperature=c["temperature"], cutoff=c["cutoff"])
    target = fepy.GrandPotential.from_bulk_density(grid, fluid, c["density"], beta_external)
    family = fepy.GridDensity(jnp.where(target.allowed, c["density"], 0.0), grid)
    return fepy.Problem(target, family, fepy.Picard(mixing=c["mixing"], anderson=c["anderson"]), c["steps"])
