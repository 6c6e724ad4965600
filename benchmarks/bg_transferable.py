"""Transferable Boltzmann generator on held-out peptides: python -m benchmarks.bg_transferable [--set KEY=VALUE ...].

Runs models/transferable_bg.py as ``fepy run`` would (build, `fepy.minimize` with the CLI's key,
``analyze`` and ``observables``; float32) and records, for every evaluated molecule (held out
first, then the training ones): atoms, Kish ESS of ``estimate_samples`` samples against the
AMBER Boltzmann density, log Z~ with its standard error, NLL of its MD frames, the Ramachandran
KL(MD || model) and total variation of raw and reweighted samples; and the cost: training time
per step (all training molecules per step) and the model's sampling rate (samples/s, compiled)
per molecule versus its number of atoms. Writes
benchmarks/results/bg/transferable_bg[_TAG].json and the Ramachandran PNG beside it.
The untrained model (the configurational-bias proposal of the force field alone: harmonic bonds,
partial-energy profiles for angles and torsions) is evaluated on the same molecules beside it
(rows with ``model = "initial"``). ``--save=FILE`` writes the trained model there
(``equinox.tree_serialise_leaves``); ``--trained=FILE`` evaluates a model saved by ``equinox.tree_serialise_leaves`` (trained with the
same config elsewhere) instead of training one; the result says so (``trained_file``).
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

import fepy
from fepy.cli import load_model, minimize_key, parse_sets

ROOT = Path(__file__).resolve().parents[1]


def main(argv):
    model = load_model(ROOT / "models" / "transferable_bg.py")
    trained = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("--trained=")), None)
    save = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("--save=")), None)
    sets = [a for a in argv if "=" in a and not a.startswith(("--trained=", "--save="))]
    config = {**model.DEFAULTS, **parse_sets(sets, model.DEFAULTS, "transferable_bg")}
    t0 = time.perf_counter()
    problem = model.build(config)
    t1 = time.perf_counter()
    if trained is None:
        sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps,
                            key=minimize_key(config["seed"]))
        family, trace = sol.family, sol.trace["nll"]
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            eqx.tree_serialise_leaves(save, family.model)
    else:
        shared = eqx.tree_deserialise_leaves(trained, problem.family.model)
        family, trace = eqx.tree_at(lambda f: f.model, problem.family, shared), None
    t2 = time.perf_counter()
    analysis = model.analyze(problem.target, family, config)
    t3 = time.perf_counter()
    initial = model.analyze(problem.target, problem.family, config)
    held = model.residues(config["held_out"])
    rows = []
    for name, results in (("trained", analysis), ("initial", initial)):
        for residue, figures in results.items():
            row = dict(model=name, residue=residue, held_out=residue in held,
                       **{k: v for k, v in figures.items() if not k.startswith("_")})
            rows.append(row)
            print(json.dumps(row), flush=True)
    out_dir = ROOT / "benchmarks" / "results" / "bg"
    tag = "_".join(s.replace("=", "-").replace(",", "-") for s in sets)
    name = f"transferable_bg_{tag}" if tag else "transferable_bg"
    written = model.plots(problem.target, family, out_dir, config, analysis)
    (out_dir / written[0]).rename(out_dir / f"{name}_ramachandran.png")
    result = dict(
        config=config, rows=rows, observables=model.observables(problem.target, family, config, analysis),
        trained_file=None if trained is None else str(trained),
        final_nll=None if trace is None else float(np.mean(trace[-50:])),
        first_nll=None if trace is None else float(np.mean(trace[:50])),
        build_s=t1 - t0, training_s=None if trained else t2 - t1,
        training_step_s=None if trained else (t2 - t1) / max(problem.steps, 1),
        evaluation_s=t3 - t2, device=str(jax.devices()[0]), cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(), load_average=os.getloadavg(), jax=jax.__version__,
        float64=bool(jax.config.jax_enable_x64), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    out = out_dir / f"{name}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"held-out mean ESS fraction {result['observables'].get('ess_held_out_mean')}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
