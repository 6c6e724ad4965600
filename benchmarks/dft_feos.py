"""FeOs side of the ``dft`` benchmark: hard spheres (FMT) in a slit between hard walls.

Run as a subprocess by `benchmarks.dft` (FeOs lives in its own virtual environment; this
module needs only ``feos``, ``si_units`` and NumPy, not fepy or JAX)::

    python -m benchmarks.dft_feos '{"temperature": 300.0, "repeats": 5, "cases": [...]}'

prints one JSON line: per case and tolerance the solver that converged (FeOs's default, or
the fallback where the default fails), βΩ, βγ, N, the Euler-Lagrange evaluations and the
wall times, the density profile of the half pore, and FeOs's version and thread count.

The problem in FeOs's units: spheres of diameter σ = 1 Å (so Å is the length unit of
fepy, and densities per Å³ are ρσ³), `FMTVersion.WhiteBear` (Roth et al. 2002, White Bear
mark I), `Pore1D(Geometry.Cartesian, H, ExternalPotential.HardWall(sigma_ss=0))`: the
centres are excluded within σ_sf = (σ_ss + σ)/2 = σ/2 of each wall, so they move on a
width H - σ. FeOs grids the half pore, z ∈ [0, H/2 + 2σ] from the pore centre (a mirror
plane) with ``n_grid`` cell-centred points; beyond H/2 - σ/2 the potential is capped at
50 kT (ρ ≈ 1e-22 there). Temperature only sets units: hard spheres are athermal.
"""

import json
import statistics
import sys
import time


def _solvers(feos, tol: float, max_iter: int) -> dict:
    """FeOs's default sequence (Anderson mixing in ln ρ to 1e-5, then in ρ, mmax = 100,
    damping 0.15) with the last tolerance set to ``tol``, and the fallback used where the
    default stops with non-finite values (dense, narrow slits): Picard in ln ρ with FeOs's
    line search to 1e-5, then the same Anderson mixing in ρ."""
    return {
        "default": feos.DFTSolver().anderson_mixing(log=True, max_iter=50, tol=1e-5).anderson_mixing(
            tol=tol, max_iter=max_iter),
        "picard_log+anderson": feos.DFTSolver().picard_iteration(log=True, max_iter=500, tol=1e-5).anderson_mixing(
            tol=tol, max_iter=max_iter),
    }


def run_case(case: dict, temperature: float, repeats: int) -> dict:
    import feos
    import numpy as np
    import si_units as si

    eta, pore, dx = case["packing_fraction"], case["pore_size"], case["dx"]
    n_grid = int(round((0.5 * pore + 2.0) / dx))
    version = getattr(feos.FMTVersion, case.get("fmt_version", "WhiteBear"))
    functional = feos.HelmholtzEnergyFunctional.fmt(np.array([1.0]), version)
    t = temperature * si.KELVIN
    rho_bulk = 6.0 * eta / np.pi  # per Å³ = per σ³
    state = feos.State(functional, t, density=rho_bulk / si.ANGSTROM**3 / si.NAV)
    spec = feos.Pore1D(feos.Geometry.Cartesian, pore * si.ANGSTROM, feos.ExternalPotential.HardWall(0.0), n_grid)
    out = dict(case, n_grid=n_grid, runs={})
    for label, tol in case["tolerances"].items():
        failures = {}
        for name, solver in _solvers(feos, tol, case.get("max_iter", 2000)).items():
            init_s, solve_s = [], []
            try:
                spec.initialize(state).solve(solver)  # a first, untimed solve, as on the fepy side
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    profile = spec.initialize(state)
                    t1 = time.perf_counter()
                    solved = profile.solve(solver)
                    t2 = time.perf_counter()
                    init_s.append(t1 - t0)
                    solve_s.append(t2 - t1)
                break
            except RuntimeError as error:  # FeOs raises it for non-finite iterates and for non-convergence
                failures[name] = str(error)
        else:
            out["runs"][label] = dict(tolerance=tol, ok=False, failures=failures)
            continue
        residuals = np.asarray(solved.solver_log.residual)
        rho = np.asarray(solved.density * si.NAV * si.ANGSTROM**3)[0]
        out["runs"][label] = dict(
            ok=True,
            solver=name,
            failures=failures,
            tolerance=tol,
            initialize_s=init_s,
            solve_s=solve_s,
            solve_min_s=min(solve_s),
            solve_median_s=statistics.median(solve_s),
            evaluations=int(residuals.size),  # Euler-Lagrange evaluations (residual log entries)
            final_residual_rms=float(residuals[-1]),
            beta_omega_half=float(solved.grand_potential / (si.KB * t)),  # kT per Å² (= σ²)
            beta_tension=float(solved.interfacial_tension / (si.KB * t)),  # (Ω + pH/2): one wall
            number_half=float(np.asarray(solved.moles / si.MOL)[0] * (si.NAV * si.MOL)),  # per Å²
            beta_pressure=float(state.pressure() / (si.KB * t) * si.ANGSTROM**3),
        )
        out.update(z=np.asarray(solved.z / si.ANGSTROM).tolist(), rho=rho.tolist())
    return out


def main(config: dict) -> dict:
    import feos
    import numpy as np

    if config.get("threads"):
        feos.set_num_threads(int(config["threads"]))
    cases = [run_case(c, config["temperature"], config["repeats"]) for c in config["cases"]]
    return dict(
        cases=cases,
        threads=int(feos.get_num_threads()),
        versions=dict(feos=feos.__version__, numpy=np.__version__, python=sys.version.split()[0]),
    )


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
