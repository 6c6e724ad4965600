"""What a run writes: ``summary.json``, ``trace.csv`` and PNG plots (used by ``fepy run``)."""

import csv
import json
import math
from pathlib import Path

import numpy as np


def jsonable(value):
    """``value`` with NumPy/JAX scalars and arrays as Python objects and NaN/Inf as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "shape") or isinstance(value, np.generic):  # numpy / jax
        array = np.asarray(value)
        if array.ndim == 0:
            item = array.item()
            return jsonable(item)
        return jsonable(array.tolist())
    return str(value)


def write_json(path, data) -> None:
    Path(path).write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def write_trace(path, trace: dict[str, np.ndarray]) -> None:
    """One row per step; the first column is the step number (1-based: the step just taken)."""
    names = list(trace)
    steps = len(next(iter(trace.values()))) if trace else 0
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *names])
        columns = [np.asarray(trace[name]) for name in names]
        for i in range(steps):
            writer.writerow([i + 1, *(_cell(c[i]) for c in columns)])


def _cell(x):
    x = x.item() if hasattr(x, "item") else x
    return repr(x) if isinstance(x, float) else x


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_trace(path, trace: dict[str, np.ndarray], reference: dict, title: str = "") -> bool:
    """log Z, F and <U> per step against the reference, and the ESS / acceptance panel."""
    plt = _pyplot()
    if not trace:
        return False
    steps = np.arange(1, len(next(iter(trace.values()))) + 1)
    panels = []
    for name, label in (
        ("log_z", r"$\log \hat Z_\lambda$"),
        ("free_energy", r"$F[q]$"),
        ("energy", r"$E_q[U]$"),
        ("grand_potential", r"$\beta\Omega[\rho]$"),
    ):
        if name in trace:
            panels.append((name, label))
    diagnostics = [n for n in ("ess_fraction", "acceptance", "resampled", "lam") if n in trace]
    residual = "residual" in trace  # a convergence measure, on a log scale
    rows = len(panels) + bool(diagnostics) + residual
    if rows == 0:
        return False
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.3 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (name, label) in zip(axes, panels):
        y = np.asarray(trace[name], float)
        ax.plot(steps, y, lw=1.2, label=label)
        if name == "log_z" and "log_z_stderr" in trace:
            se = np.asarray(trace["log_z_stderr"], float)
            ax.fill_between(steps, y - 2 * se, y + 2 * se, alpha=0.25, lw=0, label=r"$\pm 2$ s.e.")
        ref = reference.get(name)
        if isinstance(ref, (int, float)) and math.isfinite(ref):
            ax.axhline(ref, color="k", ls="--", lw=1, label=f"reference {ref:.4g}")
        finite = y[np.isfinite(y)]
        if finite.size and isinstance(ref, (int, float)) and math.isfinite(ref):
            # the early, far-from-target values would squash the approach to the reference
            tail = finite[len(finite) // 3 :]
            lo, hi = min(tail.min(), ref), max(tail.max(), ref)
            pad = 0.15 * (hi - lo) + 1e-3 * max(1.0, abs(ref))
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    if residual:
        ax = axes[len(panels)]
        ax.semilogy(steps, np.abs(np.asarray(trace["residual"], float)), lw=1.2, label="residual")
        ax.set_ylabel("residual")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    if diagnostics:
        ax = axes[-1]
        for name in diagnostics:
            ax.plot(steps, np.asarray(trace[name], float), lw=1.2, label=name)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("fraction")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _particles(family):
    positions = np.asarray(family.positions, float)
    weights = np.asarray(family.weights, float)
    keep = (weights > 0) & np.all(np.isfinite(positions), axis=1)
    return positions[keep], weights[keep]


def plot_samples(path, target, family, title: str = "", grid: int = 200) -> bool:
    """2-D particles (size and opacity by weight) over the target density exp(-beta U)."""
    import jax
    import jax.numpy as jnp

    plt = _pyplot()
    x, w = _particles(family)
    if x.shape[0] == 0 or x.shape[1] != 2:
        return False
    heavy = x[w >= 1e-3 * w.max()]  # the grid covers the particles that carry the weight
    lo, hi = heavy.min(axis=0), heavy.max(axis=0)
    pad = 0.15 * np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad, hi + pad
    gx, gy = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
    mesh = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    log_p = np.asarray(jax.vmap(target.log_density)(jnp.asarray(mesh, family.positions.dtype)))
    log_p = np.where(np.isfinite(log_p), log_p, -np.inf).reshape(grid, grid)
    density = np.exp(log_p - np.max(log_p))
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(
        density, extent=(lo[0], hi[0], lo[1], hi[1]), origin="lower", aspect="auto",
        cmap="Greys", vmin=0, vmax=1, interpolation="bilinear",
    )
    fig.colorbar(image, ax=ax, label=r"target $e^{-\beta U}$ (max = 1)")
    r = np.clip(0.5 * w * len(w) / w.sum(), 0.0, 1.0)  # 0.5 at the mean weight
    order = np.argsort(r)  # heaviest on top
    ax.scatter(
        x[order, 0], x[order, 1], s=1 + 14 * r[order], alpha=0.1 + 0.7 * r[order],
        c="tab:orange", edgecolors="none", label=f"{x.shape[0]} particles (size, opacity: weight)",
    )
    ax.contour(gx, gy, density, levels=[0.05, 0.25, 0.5, 0.75], colors="k", linewidths=0.6)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("$x_0$")
    ax.set_ylabel("$x_1$")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "particles over the target density")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_marginals(path, family, title: str = "", bins: int = 80) -> bool:
    """Weighted histograms of the first two coordinates of the particles."""
    plt = _pyplot()
    x, w = _particles(family)
    if x.shape[0] == 0:
        return False
    coords = min(2, x.shape[1])
    fig, axes = plt.subplots(1, coords, figsize=(4.2 * coords, 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.hist(x[:, i], bins=bins, weights=w, density=True, color="tab:blue", alpha=0.8)
        ax.set_xlabel(f"$x_{i}$")
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_walkers(path, family, target, title: str = "", bins: int = 80) -> bool:
    """Walkers' particles projected on the (x, z) plane, and the histogram of their distance to
    the nearest nucleus (``target.nuclei``) or to the origin, for 3-D particles."""
    plt = _pyplot()
    walkers = np.asarray(family.walkers, float)
    if walkers.shape[1] % 3:
        return False
    points = walkers.reshape(-1, 3)
    points = points[np.all(np.isfinite(points), axis=1)]
    centers = np.asarray(getattr(target, "nuclei", np.zeros((1, 3))), float)
    distance = np.min(np.linalg.norm(points[:, None, :] - centers[None], axis=-1), axis=1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.hist2d(points[:, 0], points[:, 2], bins=bins, cmap="Greys")
    left.scatter(centers[:, 0], centers[:, 2], c="tab:red", s=25, marker="x", label="nuclei")
    left.set_xlabel("x (bohr)")
    left.set_ylabel("z (bohr)")
    left.set_aspect("equal")
    left.legend(loc="upper right", fontsize=8)
    right.hist(distance, bins=bins, density=True, color="tab:blue", alpha=0.8)
    right.set_xlabel("distance to the nearest nucleus (bohr)")
    right.set_ylabel("density")
    right.grid(alpha=0.3)
    fig.suptitle(title or "walkers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_density(path, family, reference: dict, rho_bulk=None, title: str = "", most: int = 8) -> bool:
    """Density profiles ρ(x) of a `fepy.GridDensity` (up to ``most`` of a batch) against a reference.

    ``reference["profile"]`` (optional) is a dict, or a list of one per profile, with
    ``x`` and ``rho`` (and optionally ``rho_stderr`` and ``label``): an exact curve or
    simulation data. With one, a lower panel shows the solved minus the reference density
    (the solution linearly interpolated to the reference's x).
    """
    plt = _pyplot()
    x = np.asarray(family.grid.points, float)
    profiles = np.asarray(family.rho, float).reshape(-1, x.size)[:most]
    refs = reference.get("profile") or []
    refs = [refs] if isinstance(refs, dict) else list(refs)[: len(profiles)]
    fig, axes = plt.subplots(
        2 if refs else 1, 1, figsize=(7.5, 6.2 if refs else 4.0), sharex=True, squeeze=False,
        gridspec_kw=dict(height_ratios=[3, 1.4] if refs else [1]),
    )
    top = axes[0, 0]
    for i, rho in enumerate(profiles):
        top.plot(x, rho, lw=1.3, color=f"C{i}", label="DFT" if len(profiles) == 1 else f"DFT {i}")
    for i, ref in enumerate(refs):
        rx, rr = np.asarray(ref["x"], float), np.asarray(ref["rho"], float)
        label = ref.get("label", "reference") if i == 0 else None
        if "rho_stderr" in ref:
            top.errorbar(rx, rr, yerr=2 * np.asarray(ref["rho_stderr"], float), fmt="o", ms=2.5, lw=0.8,
                         color="k", alpha=0.7, label=label and f"{label} (±2 s.e.)")
        else:
            top.plot(rx, rr, "k--", lw=1.0, label=label)
        bottom = axes[1, 0]
        j = i if len(profiles) == len(refs) else 0
        bottom.plot(rx, np.interp(rx, x, profiles[j]) - rr, lw=1.0, color=f"C{j}")
    if rho_bulk is not None:
        for value in np.unique(np.asarray(rho_bulk, float).ravel())[:most]:
            top.axhline(value, color="grey", ls=":", lw=0.8)
    top.set_ylabel(r"$\rho(x)$")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    if refs:
        axes[1, 0].set_ylabel("DFT - reference")
        axes[1, 0].grid(alpha=0.3)
    axes[-1, 0].set_xlabel(r"$x$ ($\sigma$)")
    top.set_title(title or "density profile")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_run(out, solution, problem, *, summary: dict, name: str) -> list[str]:
    """Write summary.json, trace.csv and the plots of a finished run into ``out``; returns file names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = ["summary.json", "trace.csv"]
    write_json(out / "summary.json", summary)
    write_trace(out / "trace.csv", solution.trace)
    reference = summary.get("reference") or {}
    if plot_trace(out / "free_energy.png", solution.trace, reference, title=name):
        written.append("free_energy.png")
    family, target = solution.family, problem.target
    if hasattr(family, "positions") and hasattr(family, "weights"):
        dim = np.shape(family.positions)[-1]
        if dim == 2 and hasattr(target, "log_density"):
            if plot_samples(out / "samples.png", target, family, title=name):
                written.append("samples.png")
        else:
            if plot_marginals(out / "marginals.png", family, title=name):
                written.append("marginals.png")
    if hasattr(family, "walkers") and plot_walkers(out / "walkers.png", family, target, title=name):
        written.append("walkers.png")
    if hasattr(family, "rho") and hasattr(family, "grid"):
        if plot_density(out / "density.png", family, reference, getattr(target, "rho_bulk", None), title=name):
            written.append("density.png")
    return written


def plot_paths_2d(path, potential, positions, hits, extent, marks: dict | None = None, title: str = "",
                  levels: int = 30, clip: float | None = None, most: int = 64) -> bool:
    """Paths of a 2-D process over the contours of ``potential``: hitting paths blue, others red.

    ``positions``: (n, steps + 1, 2); ``extent``: (x0, x1, y0, y1); ``marks``: name -> (x, y)
    points to label (minima, saddles); ``clip``: upper energy of the contours."""
    import jax
    import jax.numpy as jnp

    plt = _pyplot()
    positions, hits = np.asarray(positions, float), np.asarray(hits, bool)
    gx, gy = np.linspace(extent[0], extent[1], 240), np.linspace(extent[2], extent[3], 240)
    mesh = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    u = np.asarray(jax.vmap(potential)(jnp.asarray(mesh))).reshape(240, 240)
    if clip is not None:
        u = np.minimum(u, clip)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    filled = ax.contourf(gx, gy, u, levels=levels, cmap="viridis")
    ax.contour(gx, gy, u, levels=levels, colors="k", linewidths=0.3)
    fig.colorbar(filled, ax=ax, label="U")
    for i in range(min(most, len(positions))):
        ax.plot(positions[i, :, 0], positions[i, :, 1], lw=0.6, alpha=0.6,
                color="tab:blue" if hits[i] else "tab:red")
    for name, (x, y) in (marks or {}).items():
        ax.plot(x, y, "w*", ms=10, mec="k")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), color="w", fontsize=9)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title or f"{min(most, len(positions))} paths (blue: reach the end state, {hits.mean():.0%})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
