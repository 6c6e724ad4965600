"""PNG figures of a lens reconstruction: observed, model, normalised residual and source."""

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
