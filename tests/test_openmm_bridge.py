"""fepy.apps.tps: OpenMM systems as JAX potentials (energies and forces against OpenMM's
Reference platform in double precision), backbone dihedrals, Kabsch RMSD."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
app = pytest.importorskip("openmm.app")
unit = pytest.importorskip("openmm.unit")

from fepy.apps import tps  # noqa: E402

# JAX term -> the OpenMM force it reproduces
TERMS = {
    "HarmonicBondForce": ("bond",),
    "HarmonicAngleForce": ("angle",),
    "PeriodicTorsionForce": ("torsion",),
    "NonbondedForce": ("coulomb", "lennard_jones"),
}
RTOL = 1e-5
KJ_PER_MOL_NM = unit.kilojoule_per_mole / unit.nanometer


def openmm_terms(system, positions):
    """Energy (kJ/mol) and forces (kJ/(mol nm)) of each force of ``system``, Reference platform."""
    system = openmm.XmlSerializer.clone(system)
    names = {}
    for group, force in enumerate(system.getForces()):
        force.setForceGroup(group)
        names[group] = type(force).__name__
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), platform)
    out = []
    for x in np.asarray(positions):
        context.setPositions(x)
        terms = {}
        for group, name in names.items():
            if name in TERMS:
                state = context.getState(getEnergy=True, getForces=True, groups={group})
                terms[name] = (
                    state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                    state.getForces(asNumpy=True).value_in_unit(KJ_PER_MOL_NM),
                )
        out.append(terms)
    return out


def assert_matches_openmm(potential, system, positions, label):
    """Every term's energy and forces within RTOL of OpenMM's; returns the worst errors."""

    @jax.jit
    @jax.vmap
    def terms(x):
        return potential.energies(x), jax.jacrev(potential.energies)(x)

    energies, grads = terms(jnp.asarray(positions))
    worst = {}
    for k, reference in enumerate(openmm_terms(system, positions)):
        for name, (e_ref, f_ref) in reference.items():
            e = sum(float(energies[t][k]) for t in TERMS[name])
            f = -sum(np.asarray(grads[t][k]) for t in TERMS[name])
            e_err = abs(e - e_ref) / max(abs(e_ref), 1e-12)
            f_err = np.abs(f - f_ref).max() / max(np.abs(f_ref).max(), 1e-12)
            assert e_err < RTOL, f"{label} conformation {k}: {name} energy {e} vs OpenMM {e_ref}"
            assert f_err < RTOL, f"{label} conformation {k}: {name} forces off by {f_err:.2e}"
            worst[name] = np.maximum(worst.get(name, 0.0), [e_err, f_err])
    print(f"\n{label}: max relative error (energy, forces) per force:")
    for name, (e_err, f_err) in worst.items():
        print(f"  {name:22s} {e_err:.1e} {f_err:.1e}")
    return worst


@pytest.fixture(scope="module")
def ala():
    return tps.alanine_dipeptide()


def test_alanine_dipeptide_matches_openmm(ala):
    assert ala.potential.n_atoms == 22 and ala.masses.shape == (22,)
    assert abs(float(ala.masses.sum()) - 144.17) < 0.1  # C6H12N2O2, g/mol
    rng = np.random.default_rng(0)
    ends = np.stack([ala.c7eq, ala.c7ax])
    scale = rng.uniform(0.01, 0.02, size=(10, 1, 1))
    positions = ends[np.arange(10) % 2] + scale * rng.normal(size=(10, 22, 3))
    worst = assert_matches_openmm(ala.potential, ala.system, positions, "alanine dipeptide")
    assert set(worst) == set(TERMS)


def test_water_trimer_matches_openmm():
    """Three flexible TIP3P waters: intermolecular Coulomb and LJ, no torsions."""
    pdb = app.PDBFile(str(next(p for p in app.__path__) + "/data/tip3p.pdb"))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete(list(modeller.topology.residues())[3:])
    system = app.ForceField("tip3p.xml").createSystem(
        modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    x = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))
    rng = np.random.default_rng(1)
    positions = x + 0.01 * rng.normal(size=(4, *x.shape))
    potential = tps.from_openmm(system)
    assert potential.n_atoms == 9 and potential.torsions.shape == (0, 4)
    assert_matches_openmm(potential, system, positions, "water trimer")


def random_system(rng, n=7):
    """A hand-built chain: bonds, angles, torsions with any phase and periodicity, charges,
    LJ and exceptions (exclusions, scaled 1-4 pairs and an arbitrary pair)."""
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    bonds, angles = openmm.HarmonicBondForce(), openmm.HarmonicAngleForce()
    torsions = openmm.PeriodicTorsionForce()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for _ in range(n):
        nb.addParticle(rng.uniform(-0.8, 0.8), rng.uniform(0.2, 0.35), rng.uniform(0.1, 1.0))
    for i in range(n - 1):
        bonds.addBond(i, i + 1, rng.uniform(0.1, 0.2), rng.uniform(1e5, 4e5))
        nb.addException(i, i + 1, 0.0, 1.0, 0.0)
    for i in range(n - 2):
        angles.addAngle(i, i + 1, i + 2, rng.uniform(1.7, 2.2), rng.uniform(200, 600))
        nb.addException(i, i + 2, 0.0, 1.0, 0.0)
    for i in range(n - 3):
        for period in (1, 2, 3):
            phase, k = rng.uniform(-np.pi, np.pi), rng.uniform(-5, 5)
            torsions.addTorsion(i, i + 1, i + 2, i + 3, period, phase, k)
        q, sigma, epsilon = rng.uniform(-0.3, 0.3), rng.uniform(0.2, 0.3), rng.uniform(0.1, 0.5)
        nb.addException(i, i + 3, q, sigma, epsilon)
    nb.addException(0, n - 1, 0.4, 0.25, 0.7)  # a pair not in the chain, with its own parameters
    for force in (bonds, torsions, nb, angles, openmm.CMMotionRemover()):
        system.addForce(force)
    return system


def test_hand_built_system_matches_openmm():
    rng = np.random.default_rng(2)
    system = random_system(rng)
    potential = tps.from_openmm(system)
    # a zig-zag chain, 0.15 nm bonds, then perturbed
    k = np.arange(7)
    x = np.stack([0.12 * k, 0.09 * (k % 2), 0.05 * np.sin(k)], axis=1)
    positions = x + 0.01 * rng.normal(size=(6, 7, 3))
    assert potential.exceptions.shape[0] == 4 + 1  # the exclusions are dropped
    assert_matches_openmm(potential, system, positions, "hand-built chain")


def test_potential_is_a_pytree(ala):
    """Passed through jit and vmap as an argument; parameters are differentiable."""
    xs = jnp.stack([ala.c7eq, ala.c7ax])

    @eqx.filter_jit
    def energies_and_dk(potential, xs):
        dk = eqx.filter_grad(lambda p: p.energies(xs[0])["torsion"])(potential).torsion_k
        return jax.vmap(potential.energy)(xs), potential.energies(xs[0])["torsion"], dk

    e, torsion, dk = energies_and_dk(ala.potential, xs)
    reference = [sum(v[0] for v in terms.values()) for terms in openmm_terms(ala.system, xs)]
    assert np.allclose(e, reference, rtol=RTOL, atol=0)
    # the torsion energy is linear in the amplitudes k: sum_t k_t dU/dk_t = U_torsion
    assert abs(float(ala.potential.torsion_k @ dk) - float(torsion)) < 1e-10


def test_bad_input_is_refused(ala):
    system = random_system(np.random.default_rng(3))
    extra = openmm.XmlSerializer.clone(system)
    extra.addForce(openmm.CustomExternalForce("x^2"))
    with pytest.raises(ValueError, match="unsupported force CustomExternalForce"):
        tps.from_openmm(extra)
    cutoff = openmm.XmlSerializer.clone(system)
    next(f for f in cutoff.getForces() if isinstance(f, openmm.NonbondedForce)).setNonbondedMethod(
        openmm.NonbondedForce.CutoffNonPeriodic
    )
    with pytest.raises(ValueError, match="not NoCutoff"):
        tps.from_openmm(cutoff)
    twice = openmm.XmlSerializer.clone(system)
    twice.addForce(openmm.PeriodicTorsionForce())
    with pytest.raises(ValueError, match="2 PeriodicTorsionForces"):
        tps.from_openmm(twice)
    p = ala.potential
    with pytest.raises(ValueError, match="bonds index atoms outside"):
        dataclasses.replace(p, bonds=p.bonds.at[0, 0].set(22))
    with pytest.raises(ValueError, match="parameters of angles"):
        dataclasses.replace(p, angle_k=p.angle_k[1:])


def test_dihedral_hand_geometry():
    """a = (1, 0, 0), b = 0, c = z, d = (cos t, sin t, 1): the dihedral is t."""
    t = np.radians([90.0, -60.0, 179.0, 0.0, 120.0])
    x = np.zeros((len(t), 4, 3))
    x[:, 0, 0] = 1.0
    x[:, 2, 2] = x[:, 3, 2] = 1.0
    x[:, 3, 0], x[:, 3, 1] = np.cos(t), np.sin(t)
    dihedral = jax.jit(jax.vmap(tps.dihedral, in_axes=(0, None)))
    forward, backward = jnp.array([0, 1, 2, 3]), jnp.array([3, 2, 1, 0])
    assert np.abs(dihedral(jnp.asarray(x), forward) - t).max() < 1e-12
    assert np.abs(dihedral(jnp.asarray(x), backward) - t).max() < 1e-12  # reversal keeps it
    assert np.abs(dihedral(jnp.asarray(2.5 * x + 1.0), forward) - t).max() < 1e-12
    # the planar trans configuration is pi, with batched indices
    trans = jnp.array([[1.0, 1, 0], [1, 0, 0], [0, 0, 0], [0, -1, 0]])
    both = tps.dihedral(trans, jnp.stack([forward, backward]))
    assert np.allclose(np.abs(both), np.pi, atol=1e-12)
    # at t = 90 deg, moving d along -x increases phi at rate 1 / |d - c| = 1
    g = jax.jit(jax.grad(tps.dihedral))(jnp.asarray(x[0]), forward)
    assert np.allclose(g[3], [-1.0, 0, 0])


def test_end_state_dihedrals(ala):
    names = [ala.atom_names[i] for i in ala.phi], [ala.atom_names[i] for i in ala.psi]
    assert names == (["C", "N", "CA", "C"], ["N", "CA", "C", "N"])
    residues = [a.residue.name for a in ala.topology.atoms()]
    assert (residues[ala.phi[0]], residues[ala.psi[3]]) == ("ACE", "NME")
    angles = {}
    for state in ("c7eq", "c7ax"):
        x = getattr(ala, state)
        angles[state] = np.degrees(np.asarray(tps.dihedral(x, jnp.stack([ala.phi, ala.psi]))))
        print(f"\n{state}: phi, psi = {angles[state][0]:.1f}, {angles[state][1]:.1f} deg")
    # c7eq.pdb lies in the phi < 0 extended basin (beta / C5, towards C7eq), c7ax.pdb in the
    # phi > 0 left-handed basin of C7ax
    phi, psi = angles["c7eq"]
    assert -180 < phi < -60 and 60 < psi <= 180
    phi, psi = angles["c7ax"]
    assert 40 < phi < 100 and -90 < psi < 40


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def test_kabsch_rmsd(ala):
    rng = np.random.default_rng(4)
    rmsd, align = jax.jit(tps.rmsd), jax.jit(tps.align)
    x, y = ala.c7eq, ala.c7ax
    rotation, shift = jnp.asarray(random_rotation(rng)), jnp.asarray(rng.normal(size=3))
    moved = x @ rotation.T + shift
    assert float(rmsd(x, x)) < 1e-12
    assert float(rmsd(moved, x)) < 1e-12
    assert np.abs(align(moved, x) - x).max() < 1e-12
    r = float(rmsd(x, y))
    print(f"\nRMSD(c7eq, c7ax) = {r:.4f} nm")
    assert 0.05 < r < 0.5
    assert abs(float(rmsd(moved, y)) - r) < 1e-12
    assert abs(float(rmsd(y, moved)) - r) < 1e-12
    # the RMSD is the minimum over rotations: no random rotation does better
    c, yc = np.asarray(x - x.mean(0)), np.asarray(y - y.mean(0))
    q = np.stack([random_rotation(rng) for _ in range(50)])
    assert (np.sqrt(np.mean(np.sum((np.einsum("kab,ib->kia", q, c) - yc) ** 2, -1), -1)) >= r).all()
    # mass weighting changes it; a mirror image is not superposable
    assert abs(float(rmsd(x, y, ala.masses)) - r) > 1e-4
    assert float(rmsd(x * jnp.array([1.0, 1.0, -1.0]), x)) > 0.01
    # gradients: finite at identity, central differences elsewhere (envelope theorem)
    assert np.isfinite(jax.jit(jax.grad(tps.rmsd))(x, x)).all()
    g = jax.jit(jax.grad(tps.rmsd))(x, y, ala.masses)
    v = jnp.asarray(rng.normal(size=x.shape))
    h = 1e-6
    fd = (rmsd(x + h * v, y, ala.masses) - rmsd(x - h * v, y, ala.masses)) / (2 * h)
    assert abs(float(jnp.sum(g * v)) - float(fd)) < 1e-7 * max(1.0, abs(float(fd)))
