"""DW4 Boltzmann generator: an E(n)-equivariant CNF trained by equivariant flow matching.

Target: DW4 of Köhler, Klein & Noé (ICML 2020), 4 particles in 2-D with the pair double
well U = sum_{i<j} -4 (d_ij - 4)^2 + 0.9 (d_ij - 4)^4 over unique pairs at temperature 1
(`fepy.apps.bg.dw4`; the convention of every code we checked, see `fepy.apps.bg.particles`).
Its density, log Z, ESS and likelihoods live on the 6-dimensional centre-of-mass-free subspace.

Data: the papers' MD/MCMC datasets are not reachable offline, so fepy makes its own:
``train_samples`` and, independently, ``test_samples`` equilibrium samples by SMC from a
Gaussian (HMC moves) followed by ``decorrelation_steps`` HMC steps per chain
(`fepy.apps.bg.equilibrium_samples`); the held-out set's SMC also gives the reference log Z.

Flow: `fepy.CNF` with an `fepy.apps.bg.EGNNField` (E(n)- and permutation-equivariant,
centre-of-mass free) on `fepy.apps.bg.CoMFreeGaussian`, exact divergence, trained by
`fepy.FlowMatching` with the orbit alignment of equivariant flow matching (Klein, Krämer & Noé
2023; ``coupling``). Writes ``ess`` / ``ess_fraction`` (Kish, ``estimate_samples`` flow
samples), ``log_z`` / ``log_z_stderr`` (importance sampling), ``nll`` (held-out samples),
``reference_log_z`` (SMC), ``entropy`` and ``kl_forward`` = nll - entropy, reweighted energies,
and distances_energies.png. Keys: `fepy.apps.bg.recipes`.
"""

from fepy.apps.bg import dw4, recipes

DEFAULTS = dict(
    seed=0,
    train_samples=10_000,
    test_samples=2_000,
    data_base_scale=2.0,
    anneal_steps=200,
    decorrelation_steps=500,
    data_step_size=0.05,
    data_leapfrog=10,
    base_scale=2.0,  # about the data's coordinate spread (1.8): shorter paths than 1.0
    width=64,
    layers=3,
    ode_steps=0,  # adaptive
    rtol=1e-5,
    atol=1e-5,
    coupling="equivariant",
    sigma=0.0,
    steps=10_000,
    batch=256,
    lr=1e-3,
    estimate_samples=2_000,
    chunk=250,
)


def build(config):
    return recipes.problem(dw4(), {**DEFAULTS, **config})


def analyze(target, family, config):
    return recipes.analysis(target, family, {**DEFAULTS, **config})


def observables(target, family, config, analysis):
    return recipes.observables(target, analysis, {**DEFAULTS, **config})


def plots(target, family, out, config, analysis):
    return recipes.plots(target, analysis, out, "DW4")
