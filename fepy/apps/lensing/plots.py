"""PNG figures of a lens reconstruction (observed, model, normalised residual, source) and a corner plot of posterior samples."""

from pathlib import Path

import numpy as np

from .imaging import Image, ImageModel, PixelGrid
from .pixelated import PixelatedSource
from .posterior import LensSystem


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _extent(grid: PixelGrid) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in arcsec of a grid's pixels (x may grow leftwards)."""
    x, y = (np.asarray(a) for a in grid.coordinates())
    hx = 0.5 * (x[0, -1] - x[0, 0]) / max(grid.nx - 1, 1)
    hy = 0.5 * (y[-1, 0] - y[0, 0]) / max(grid.ny - 1, 1)
    return x[0, 0] - hx, x[0, -1] + hx, y[0, 0] - hy, y[-1, 0] + hy


def _save(path, values, extent, title, label, cmap="viridis", symmetric=False, plane="image"):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.3))
    limit = np.nanmax(np.abs(values)) if symmetric else None
    image = ax.imshow(
        values, origin="lower", extent=extent, cmap=cmap,
        vmin=-limit if symmetric else None, vmax=limit,
    )
    fig.colorbar(image, ax=ax, label=label)
    ax.set_xlabel(f"{plane}-plane x (arcsec)")
    ax.set_ylabel(f"{plane}-plane y (arcsec)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reconstruction(
    out, model: ImageModel, data: Image, system: LensSystem, source_grid: PixelGrid | None = None
) -> list[str]:
    """Write ``observed.png``, ``model.png``, ``residual.png`` ((d - m)/sigma with the model's
    noise variance) and ``source.png`` into ``out``; returns the file names.

    The source is drawn on its own grid when it is a `PixelatedSource`, else on
    ``source_grid`` (default: 160 x 160 pixels over the central half of the image field)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image = np.asarray(model.image(system.lens, system.source, system.lens_light))
    data = np.asarray(data)
    sigma = np.sqrt(np.asarray(model.noise.variance(image)))
    extent = _extent(model.grid)
    _save(out / "observed.png", data, extent, "observed", "flux per pixel")
    _save(out / "model.png", image, extent, "model", "flux per pixel")
    chi2 = float(np.sum(((data - image) / sigma) ** 2)) / data.size
    _save(out / "residual.png", (data - image) / sigma, extent,
          f"normalised residual, chi2 / pixel = {chi2:.3f}", r"$(d - m)/\sigma$", cmap="RdBu_r", symmetric=True)
    source = system.source
    if isinstance(source, PixelatedSource):
        grid, values = source.grid, np.asarray(source.values)
    else:
        grid = source_grid or PixelGrid.square(160, model.grid.nx * model.grid.pixel_width / 2 / 160)
        values = np.asarray(source.surface_brightness(*grid.coordinates()))
    _save(out / "source.png", values, _extent(grid), "reconstructed source", "flux per arcsec$^2$", plane="source")
    return ["observed.png", "model.png", "residual.png", "source.png"]


def plot_corner(path, samples, names, truths=None, title=None, bins: int = 30) -> Path:
    """A corner plot of posterior ``samples`` (shape ``(n, k)``, k parameters named ``names``):
    1-D histograms on the diagonal, 2-D histograms below it, ``truths`` (optional) as lines;
    matplotlib only. Returns the written path."""
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or samples.shape[1] != len(names):
        raise ValueError(f"samples must have shape (n, {len(names)}), got {samples.shape}")
    k = len(names)
    plt = _pyplot()
    fig, axes = plt.subplots(k, k, figsize=(1.9 * k + 0.6, 1.9 * k + 0.6), squeeze=False)
    ranges = []
    for i in range(k):
        lo, hi = np.percentile(samples[:, i], [0.5, 99.5])
        pad = 0.05 * (hi - lo) if hi > lo else 1e-12 + 1e-6 * abs(lo)
        ranges.append((lo - pad, hi + pad))
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                ax.hist(samples[:, i], bins=bins, range=ranges[i], histtype="step", color="k")
                mean, std = samples[:, i].mean(), samples[:, i].std()
                ax.set_title(f"{names[i]} = {mean:.4g} ± {std:.2g}", fontsize=7)
                ax.set_yticks([])
                if truths is not None:
                    ax.axvline(truths[i], color="tab:red", lw=1)
            else:
                ax.hist2d(samples[:, j], samples[:, i], bins=bins, range=[ranges[j], ranges[i]], cmap="Greys")
                if truths is not None:
                    ax.axvline(truths[j], color="tab:red", lw=0.8)
                    ax.axhline(truths[i], color="tab:red", lw=0.8)
            ax.set_xlim(ranges[j])
            ax.tick_params(labelsize=6)
            if i == k - 1:
                ax.set_xlabel(names[j], fontsize=8)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=8)
            elif i != j:
                ax.set_yticklabels([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
