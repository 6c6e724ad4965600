"""Monte Carlo estimators shared by the solvers: log-mean-exp, ESS, log Z with a standard error."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def log_mean_exp(log_x: Float[Array, "... n"], axis: int = -1) -> Float[Array, "..."]:
    r""":math:`\log \frac1n \sum_i e^{\ell_i}`, stable for large :math:`|\ell_i|`."""
    n = log_x.shape[axis]
    return jax.nn.logsumexp(log_x, axis=axis) - jnp.log(n)


def kish_ess(log_w: Float[Array, "... n"], axis: int = -1) -> Float[Array, "..."]:
    r"""Kish effective sample size :math:`(\sum w)^2 / \sum w^2` of unnormalised log-weights."""
    return jnp.exp(2 * jax.nn.logsumexp(log_w, axis=axis) - jax.nn.logsumexp(2 * log_w, axis=axis))


def log_z_and_stderr(
    log_z_replicas: Float[Array, " r"],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Combine independent unbiased estimates :math:`\hat Z_r` into :math:`\log \bar Z` and its error.

    :math:`\bar Z = \frac1R \sum_r \hat Z_r` stays unbiased; the standard error of
    :math:`\log \bar Z` is the relative standard error of :math:`\bar Z` (delta method),
    :math:`\mathrm{sd}(\hat Z_r) / (\sqrt{R}\, \bar Z)` with the sample standard deviation.
    The importance weights :math:`w_i = e^{-\beta U(x_i)}/q(x_i)`, :math:`x_i \sim q`, are such
    estimates, one per sample: given their logs this is the importance-sampling
    :math:`\log \hat Z` with the error :math:`\mathrm{sd}(w)/(\sqrt n\,\bar w)`.
    """
    r = log_z_replicas.shape[0]
    log_z = log_mean_exp(log_z_replicas)
    relative = jnp.exp(log_z_replicas - log_z)  # Z_r / Z_bar, mean 1
    stderr = jnp.sqrt(jnp.sum((relative - 1.0) ** 2) / (r - 1) / r) if r > 1 else jnp.nan
    return log_z, stderr


def reweighted_mean(
    log_w: Float[Array, " n"], values: Float[Array, "n ..."]
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    r"""Self-normalised importance-sampling estimate of :math:`E_p[f]` and its standard error.

    With normalised weights :math:`\bar w_i = w_i/\sum_j w_j` of samples :math:`x_i \sim q`,
    :math:`\hat\mu = \sum_i \bar w_i f(x_i)` (consistent, bias :math:`O(1/n)`), and by the delta
    method :math:`\mathrm{se}(\hat\mu)^2 = \sum_i \bar w_i^2 (f(x_i) - \hat\mu)^2`, which is
    :math:`\mathrm{Var}_p(f)/\mathrm{ESS}` for weights of equal spread. ``values`` holds
    :math:`f(x_i)` along its first axis (any trailing shape: one estimate per component).
    """
    log_w = jnp.asarray(log_w)
    values = jnp.asarray(values)
    if log_w.ndim != 1 or values.ndim < 1 or values.shape[0] != log_w.shape[0]:
        raise ValueError(
            f"reweighted_mean needs log_w of shape (n,) and values of shape (n, ...), got "
            f"{log_w.shape} and {values.shape}"
        )
    w = jax.nn.softmax(log_w)
    w = w.reshape(w.shape + (1,) * (values.ndim - 1))
    mean = jnp.sum(w * values, axis=0)
    stderr = jnp.sqrt(jnp.sum(w**2 * (values - mean) ** 2, axis=0))
    return mean, stderr


def blocking_mean_and_stderr(
    series: Float[Array, " t"], min_blocks: int = 32
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Mean of a correlated series and its standard error by blocking (Flyvbjerg & Petersen 1989).

    The series is averaged in blocks of 1, 2, 4, ... consecutive values; the naive
    standard error of the block means grows with the block length until the blocks are
    longer than the autocorrelation time, then plateaus. The largest estimate over block
    lengths that leave at least ``min_blocks`` blocks is returned (conservative). A
    trailing remainder that does not fill a block is dropped at that level.
    """
    t = series.shape[0]
    mean = jnp.mean(series)
    errors = []
    length = 1
    while t // length >= max(min_blocks, 2):
        blocks = series[: (t // length) * length].reshape(-1, length).mean(axis=1)
        errors.append(jnp.std(blocks, ddof=1) / jnp.sqrt(blocks.shape[0]))
        length *= 2
    if not errors:
        return mean, jnp.std(series, ddof=1) / jnp.sqrt(t) if t > 1 else jnp.nan
    return mean, jnp.max(jnp.stack(errors))
