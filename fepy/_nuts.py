r"""`fepy.nuts`: numpyro's No-U-Turn sampler on the potential :math:`\beta U` of an `fepy.Energy`."""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._validate import as_float_array


class NUTSResult(NamedTuple):
    r"""Draws of :math:`p \propto e^{-\beta U}` by `fepy.nuts`, with numpyro's diagnostics.

    Arrays have the leading dimensions ``(chain, draw)``; :meth:`posterior` and
    :meth:`sample_stats` are dicts in ArviZ's layout, so
    ``arviz.from_dict(posterior=r.posterior(names), sample_stats=r.sample_stats())`` makes an
    ``InferenceData`` (ArviZ is not a dependency of fepy).
    """

    positions: Float[Array, "chain draw dim"]
    """The draws x."""
    log_density: Float[Array, "chain draw"]
    r""":math:`-\beta U` at the draws (numpyro's potential energy with the sign flipped)."""
    diverging: Array
    """Whether the trajectory of each draw diverged."""
    accept_prob: Float[Array, "chain draw"]
    """Mean Metropolis acceptance probability of each trajectory."""
    r_hat: Float[Array, " dim"]
    r"""Split Gelman-Rubin :math:`\hat R` per coordinate (NaN with one chain of < 4 draws)."""
    n_eff: Float[Array, " dim"]
    """Effective sample size per coordinate, over all chains."""

    def posterior(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The draws by name, each ``(chain, draw)``; without ``names`` one entry ``x`` of
        shape ``(chain, draw, dim)``."""
        x = np.asarray(self.positions)
        if names is None:
            return dict(x=x)
        if len(names) != x.shape[-1]:
            raise ValueError(f"{len(names)} names for {x.shape[-1]} coordinates")
        return {name: x[..., i] for i, name in enumerate(names)}

    def sample_stats(self) -> dict[str, np.ndarray]:
        """ArviZ's ``sample_stats`` group: ``lp`` (the unnormalised log density
        :math:`-\beta U`), ``diverging`` and ``acceptance_rate``."""
        return dict(
            lp=np.asarray(self.log_density),
            diverging=np.asarray(self.diverging),
            acceptance_rate=np.asarray(self.accept_prob),
        )


def nuts(
    target,
    init: Float[Array, "... dim"],
    key: PRNGKeyArray,
    *,
    warmup: int,
    samples: int,
    chains: int = 1,
    dense_mass: bool = False,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    chain_method: str = "sequential",
    progress_bar: bool = False,
) -> NUTSResult:
    r"""Sample :math:`p(x) \propto e^{-\beta U(x)}` of an `fepy.Energy` with numpyro's NUTS
    (Hoffman & Gelman 2014) on the potential :math:`\beta U`.

    ``warmup`` adaptation steps (step size by dual averaging to ``target_accept_prob``, a
    diagonal or, with ``dense_mass``, a dense inverse mass matrix from the warm-up draws)
    are followed by ``samples`` draws per chain. ``init`` is one start ``(dim,)`` shared by
    all chains or one per chain ``(chains, dim)``; start from a mode (e.g. the best particle
    of `fepy.Descent`) or from over-dispersed points so that :math:`\hat R` means something.
    ``chain_method`` is numpyro's: ``'sequential'``, ``'vectorized'`` or ``'parallel'`` (one
    device per chain).
    """
    from numpyro.diagnostics import summary
    from numpyro.infer import MCMC, NUTS

    for name, value in (("warmup", warmup), ("samples", samples), ("chains", chains)):
        low = 0 if name == "warmup" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"nuts: {name} must be an integer >= {low}, got {value!r}")
    init = as_float_array(init, "init")
    if init.shape == (target.dim,):
        init = jnp.broadcast_to(init, (chains, target.dim))
    if init.shape != (chains, target.dim):
        raise ValueError(f"nuts: init must have shape ({target.dim},) or ({chains}, {target.dim}), got {init.shape}")
    if not bool(jnp.all(jnp.isfinite(jax.vmap(target.energy)(init)))):
        raise ValueError("nuts: U is not finite at every start in init")

    def potential(x):
        return target.beta * target.energy(x)

    kernel = NUTS(
        potential_fn=potential, dense_mass=dense_mass, target_accept_prob=target_accept_prob,
        max_tree_depth=max_tree_depth,
    )
    mcmc = MCMC(
        kernel, num_warmup=warmup, num_samples=samples, num_chains=chains,
        chain_method=chain_method, progress_bar=progress_bar,
    )
    mcmc.run(
        key, init_params=init if chains > 1 else init[0],
        extra_fields=("potential_energy", "diverging", "accept_prob"),
    )
    positions = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    diagnostics = summary(np.asarray(positions), group_by_chain=True)
    return NUTSResult(
        positions=positions,
        log_density=-extra["potential_energy"],
        diverging=extra["diverging"],
        accept_prob=extra["accept_prob"],
        r_hat=jnp.asarray(diagnostics["Param:0"]["r_hat"]),
        n_eff=jnp.asarray(diagnostics["Param:0"]["n_eff"]),
    )
