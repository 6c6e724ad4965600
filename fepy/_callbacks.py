"""Callbacks run by `fepy.minimize` between jitted chunks of steps.

Callbacks do I/O and keep state (a progress bar, files), so they are plain Python
objects rather than pytrees; they never enter the jitted loop.
"""

import numpy as np

from ._checkpoint import save_checkpoint


def _short(value) -> str:
    """A statistic for the progress bar: the number, or the range over a batch of problems."""
    value = np.asarray(value)
    if value.ndim == 0:
        return f"{value:.4g}"
    return f"{np.nanmin(value):.4g}..{np.nanmax(value):.4g}"


class Callback:
    """Called after each chunk of steps with the step reached and the full trace so far.

    ``every`` (steps, or None) asks ``minimize`` to end a chunk at each multiple of it.
    """

    every: int | None = None

    def start(self, step: int, steps: int) -> None:
        """The run starts (or resumes) at ``step`` of ``steps``."""

    def __call__(self, step: int, steps: int, family, state, key, trace: dict[str, np.ndarray]):
        """A chunk ended at ``step``."""

    def close(self) -> None:
        """The run ended, normally or not."""


# per-step statistics worth watching, of every solver family: particles and QMC (log Z, ESS,
# acceptance, energy) and densities (DFT: grand potential βΩ and Euler-Lagrange residual)
KNOWN_STATS = ("log_z", "ess_fraction", "acceptance", "energy", "grand_potential", "residual")


class ProgressBar(Callback):
    """A tqdm progress bar on stderr, with the latest values of those of ``show`` that the
    solver reports (per-step statistics in the trace) as postfix."""

    def __init__(self, show=KNOWN_STATS):
        self.show = tuple(show)
        self._bar = None

    def start(self, step, steps):
        from tqdm.auto import tqdm

        self.close()
        self._bar = tqdm(total=steps, initial=step, unit="step", dynamic_ncols=True)

    def __call__(self, step, steps, family, state, key, trace):
        postfix = {name: _short(trace[name][-1]) for name in self.show if name in trace}
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Checkpoint(Callback):
    """Write a checkpoint to ``directory`` every ``every`` steps and at the end of the run.

    Resume with ``fepy.minimize(..., resume=directory)``: the continued run equals an
    uninterrupted one exactly, because the key of step ``k`` is ``fold_in(key, k)``
    whatever the chunking.
    """

    def __init__(self, directory, every: int = 1000):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Checkpoint every must be a positive integer, got {every!r}")
        self.directory = directory
        self.every = every

    def __call__(self, step, steps, family, state, key, trace):
        if step % self.every == 0 or step == steps:
            save_checkpoint(self.directory, step, family, state, key, trace)
