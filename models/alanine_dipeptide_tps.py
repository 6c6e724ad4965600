r"""Alanine dipeptide in vacuum, C7eq -> C7ax at 300 K: transition paths by stochastic optimal control.

The system of PIPS (Holdijk et al., NeurIPS 2023), TPS-DPS (Seong et al., ICLR 2025) and Doob's
Lagrangian (Du et al., NeurIPS 2024): ACE-ALA-NME, amber99sb-ildn, no cutoff, no constraints
(`fepy.apps.tps.alanine_dipeptide`), underdamped Langevin dynamics at :math:`k_BT` = 2.494 kJ/mol
(300 K) with friction 1/ps and 1 fs steps (ALIGN splitting, `fepy.PathMeasure`; Maxwell-Boltzmann initial velocities), from the packaged
``c7eq.pdb`` (phi, psi) = (-146.8°, 173.8°) (the extended C5/C7eq region; TPS-DPS's ``c5.pdb``)
to ``c7ax.pdb`` (64.8°, 18.3°), both energy-minimised first (``minimize_ends``, as TPS-DPS does:
(-147.0°, 159.1°) and (60.2°, -40.9°), U = -88.45 and -85.00 kJ/mol; see `system`).
Units: nm, ps, amu, kJ/mol (1 kJ/mol = 1 amu nm²/ps²). TPS-DPS and PIPS constrain the bonds to
hydrogen (``HBonds``); here no bond is constrained (the issue's setup), so the 12 X-H stretches
carry their thermal potential energy: in unbiased 1-ps OpenMM runs from the minimum the mean
path maximum of U is -12.2 kJ/mol unconstrained against -24.8 kJ/mol with ``HBonds``, a
~12 kJ/mol offset of every ETS against theirs.

Family: a time-independent force (`fepy.Control`, underdamped dynamics need one) from
`fepy.apps.tps.AlignedForce`: an MLP on the heavy-atom-Kabsch-aligned displacement from C7ax whose
output is rotated back, so the control is rotation- and translation-equivariant (as TPS-DPS's
``BiasForce``), plus a spring of stiffness ``stiffness`` pulling the aligned heavy atoms
towards C7ax, trained with the network (the time-independent analogue of a steered-MD start:
untrained, 6 of 16 paths already hit, so the terminal cost's gradient is informative; without it
no path hit after 24 PIPS steps). Terminal cost (`fepy.apps.tps.AlignedEndState`): a Gaussian of width ``width``
per coordinate on the aligned heavy atoms; a path hits when its final (phi, psi) is within
0.75 rad of C7ax's. Solver: `fepy.PathKL` with ``objective = "relative_entropy"`` (PIPS: the path
free energy differentiated through the solve) or ``"log_variance"`` (TPS-DPS's off-policy
objective: learned log Z, replay buffer).

Settings and their sources (read in the authors' repositories):

* TPS-DPS (kiyoung98/tps-dps, ``src/train.py``): 1000 steps of 1 fs, 16 paths per rollout,
  friction 0.001/fs, force parametrisation on Kabsch-aligned coordinates, a Gaussian terminal
  cost of sigma 0.1 nm on the aligned heavy atoms (max over time), 1000 rollouts x 1000 gradient
  steps, buffer 1000, lr 1e-4 (policy) / 1e-3 (log Z), temperature annealed 600 -> 300 K.
* PIPS (LarsHoldijk/SOCTransitionPaths, ``alanine_tester.py``): 5000 steps of 1 fs, 16 paths,
  10000 rollouts, lr 1e-4, a potential parametrisation, terminal cost on pairwise distances.

Here the path is 1000 steps (1 ps) as in TPS-DPS, 16 paths per step, and far fewer training
steps (the CPU budget; ``steps``), with a larger learning rate (1e-3, TPS-DPS 1e-4) to match. The cost width is
narrower than TPS-DPS's sigma because it is summed over coordinates, not averaged (TPS-DPS also
averages its path log-likelihood over steps and coordinates), and no temperature annealing is
used. The THP is measured on the final frame (TPS-DPS evaluates the frame of best terminal
score along the path instead).

``observables`` samples ``eval_paths`` fresh paths from the trained control (key ``seed + 1``) and
reports the field's metrics (`fepy.apps.tps.metrics`): RMSD (Å), THP (%), ETS (kJ/mol), EPD
(nm²), the reference log-likelihood, the training energy evaluations; ``plots`` draws them over
an adiabatic (phi, psi) map of the potential.
"""

import functools
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import fepy
from fepy.apps.tps import AlignedEndState, AlignedForce, FlatPotential, alanine_dipeptide
from fepy.apps.tps.metrics import transition_metrics
from fepy.apps.tps.molecular import local_minimum

KT_300K = 2.494338785  # kJ/mol: R T at 300 K
DEFAULTS = dict(
    seed=0,
    objective="relative_entropy",  # relative_entropy (PIPS) | log_variance (TPS-DPS style)
    steps=400,  # training steps
    path_steps=1000,  # 1 fs each: 1 ps paths
    dt=0.001,  # ps
    friction=1.0,  # 1/ps
    temperature=300.0,  # K
    trajectories=16,
    width=0.005,  # nm, terminal Gaussian per coordinate (at 0.02 not crossing was optimal)
    learning_rate=1e-3,
    clip=1.0,  # global gradient-norm clip
    hidden=128,
    depth=3,
    force_scale=100.0,  # kJ/mol/nm per network output unit
    stiffness=2000.0,  # kJ/mol/nm^2, the initial spring on the aligned heavy atoms towards C7ax
    buffer_size=256,  # log_variance: replay buffer (paths)
    replay=8,  # log_variance: buffer updates per rollout
    eval_paths=64,
    minimize_ends=True,  # start and target at the local minima of U (TPS-DPS), else the packaged structures
)
OBJECTIVES = ("relative_entropy", "log_variance")

# Published figures on this system (see benchmarks/README.md, "The tps entry", for the tables they
# come from and what could not be found); numbers not found are absent rather than guessed.
REFERENCE: dict = {}


def reference(config) -> dict:
    return dict(REFERENCE)


def _check(config) -> dict:
    c = {**DEFAULTS, **config}
    if c["objective"] not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {c['objective']!r}")
    for name in ("path_steps", "trajectories", "hidden", "depth", "eval_paths", "replay"):
        if not isinstance(c[name], int) or c[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {c[name]!r}")
    if not (isinstance(c["stiffness"], (int, float)) and math.isfinite(c["stiffness"]) and c["stiffness"] >= 0):
        raise ValueError(f"stiffness must be a finite number >= 0, got {c['stiffness']!r}")
    if not isinstance(c["minimize_ends"], bool):
        raise ValueError(f"minimize_ends must be True or False, got {c['minimize_ends']!r}")
    for name in ("dt", "friction", "temperature", "width", "learning_rate", "force_scale", "clip"):
        if not (isinstance(c[name], (int, float)) and math.isfinite(c[name]) and c[name] > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {c[name]!r}")
    return c


@functools.cache
def system(minimize_ends: bool = DEFAULTS["minimize_ends"]):
    """The molecule (`fepy.apps.tps.AlanineDipeptide`) and the indices of its heavy atoms.

    With ``minimize_ends`` its ``c7eq`` and ``c7ax`` are the local minima of U reached from the
    packaged structures (`fepy.apps.tps.molecular.local_minimum`, max force < 1e-3 kJ/mol/nm:
    U = -88.45 and -85.00 kJ/mol, (phi, psi) = (-147.0°, 159.1°) and (60.2°, -40.9°), equal to
    OpenMM's ``LocalEnergyMinimizer`` to 1e-8 kJ/mol), as TPS-DPS starts and ends its paths;
    otherwise the packaged structures themselves (U = -19.4 and -9.4 kJ/mol: strained, so a path
    starting there carries ~70 kJ/mol of excess potential energy into its first picoseconds).
    """
    ad = alanine_dipeptide()
    if minimize_ends:
        ad = ad._replace(c7eq=local_minimum(ad.potential.energy, ad.c7eq),
                         c7ax=local_minimum(ad.potential.energy, ad.c7ax))
    heavy = np.flatnonzero(np.asarray(ad.masses) > 1.5)
    return ad, heavy


def build(config) -> fepy.Problem:
    c = _check(config)
    ad, heavy = system(c["minimize_ends"])
    end = AlignedEndState(ad.c7ax, heavy, c["width"], ad.phi, ad.psi)
    target = fepy.PathMeasure(
        FlatPotential(ad.potential), ad.c7eq.ravel(), end,
        temperature=KT_300K * c["temperature"] / 300.0, friction=c["friction"], dt=c["dt"],
        steps=c["path_steps"], mass=jnp.repeat(ad.masses, 3), dynamics="underdamped",
    )
    network = AlignedForce.mlp(ad.c7ax, heavy, key=jax.random.key(c["seed"]), width=c["hidden"], depth=c["depth"],
                               stiffness=c["stiffness"] / c["force_scale"])
    family = fepy.Control(network, kind="force", time_dependent=False, scale=c["force_scale"])
    if c["objective"] == "relative_entropy":
        objective = fepy.RelativeEntropy()
    else:
        objective = fepy.LogVariance(buffer_size=c["buffer_size"], replay=c["replay"])
    schedule = optax.cosine_decay_schedule(c["learning_rate"], max(c["steps"], 1), 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(c["clip"]), optax.adam(schedule))
    solver = fepy.PathKL(optimizer, c["trajectories"], objective)
    return fepy.Problem(target, family, solver, c["steps"])


def evaluation_paths(target, family, config) -> fepy.Paths:
    """``eval_paths`` paths of the trained control, drawn with the key ``seed + 1``."""
    c = _check(config)
    return eqx.filter_jit(lambda f, k: target.simulate(f, k, c["eval_paths"]))(family, jax.random.key(c["seed"] + 1))


def analyze(target, family, config) -> fepy.Paths:
    """The evaluation paths (`evaluation_paths`), simulated once for both hooks."""
    return evaluation_paths(target, family, config)


def observables(target, family, config, analysis) -> dict:
    """The field's metrics of the evaluation paths (`fepy.apps.tps.metrics.transition_metrics`)."""
    ad, heavy = system(_check(config)["minimize_ends"])
    return transition_metrics(target, analysis, ad.c7ax, ad.phi, ad.psi, heavy)


def ramachandran_map(bins: int = 36, stiffness: float = 2000.0, iterations: int = 400):
    r"""An adiabatic map :math:`E(\phi, \psi) = \min U` over the other coordinates (kJ/mol), relative to its minimum.

    On a ``bins`` x ``bins`` grid, U plus a harmonic restraint :math:`\kappa(\Delta\phi^2 + \Delta\psi^2)`
    (:math:`\kappa` = ``stiffness`` kJ/mol/rad², wrapped differences) is minimised by Adam from both
    C7eq and C7ax, and the lower unrestrained U of the two is kept. A potential-energy surface,
    not a free energy (no entropy); enough to show where the basins and saddles lie.
    """
    from fepy.apps.tps.metrics import wrap_angle
    from fepy.apps.tps.molecular import dihedral

    ad, _ = system()
    atoms = jnp.stack([ad.phi, ad.psi])
    grid = jnp.linspace(-jnp.pi, jnp.pi, bins, endpoint=False) + jnp.pi / bins
    centres = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)

    def restrained(x, angles):
        delta = wrap_angle(dihedral(x, atoms) - angles)
        return ad.potential.energy(x) + stiffness * jnp.sum(delta**2)

    opt = optax.adam(2e-3)

    @jax.jit
    def relax(start):
        x0 = jnp.broadcast_to(start, (centres.shape[0],) + start.shape)

        def step(carry, _):
            x, state = carry
            grad = jax.vmap(jax.grad(restrained))(x, centres)
            updates, state = opt.update(grad, state, x)
            return (optax.apply_updates(x, updates), state), None

        (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=iterations)
        return jax.vmap(ad.potential.energy)(x), jax.vmap(lambda y: dihedral(y, atoms))(x)

    energies = jnp.minimum(relax(ad.c7eq)[0], relax(ad.c7ax)[0])
    energies = np.asarray(energies - jnp.min(energies)).reshape(bins, bins)
    return np.degrees(np.asarray(grid)), energies


def plots(target, family, out, config, analysis) -> list[str]:
    """``ramachandran.png``: the evaluation paths in (phi, psi) over the adiabatic map (`ramachandran_map`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fepy.apps.tps.molecular import dihedral

    ad, _ = system(_check(config)["minimize_ends"])
    paths = analysis
    atoms = jnp.stack([ad.phi, ad.psi])
    angles = np.degrees(np.asarray(jax.vmap(jax.vmap(lambda x: dihedral(x.reshape(-1, 3), atoms)))(paths.positions)))
    hits = np.asarray(target.hits(paths))
    grid, energy = ramachandran_map()
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    mesh = ax.contourf(grid, grid, energy.T, levels=np.linspace(0, 100, 21), cmap="viridis", extend="max")
    fig.colorbar(mesh, ax=ax, label="adiabatic U(phi, psi) - min (kJ/mol)")
    for angle, hit in zip(angles, hits):
        # break the line where an angle wraps around
        a = angle.copy()
        a[1:][np.any(np.abs(np.diff(a, axis=0)) > 180, axis=1)] = np.nan
        ax.plot(a[:, 0], a[:, 1], color="white" if hit else "red", lw=0.6, alpha=0.7)
    for name, xyz, marker in (("C7eq (start)", ad.c7eq, "o"), ("C7ax (target)", ad.c7ax, "*")):
        phi, psi = np.degrees(np.asarray(dihedral(xyz, atoms)))
        ax.plot(phi, psi, marker, color="orange", ms=10, mec="k", label=name)
    ax.set(xlim=(-180, 180), ylim=(-180, 180), xlabel="phi (deg)", ylabel="psi (deg)",
           title=f"{config.get('objective', DEFAULTS['objective'])}: {int(hits.sum())}/{len(hits)} paths hit "
                 "(white hit, red miss)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(out) / "ramachandran.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path.name]
