r"""Flow annealed importance sampling bootstrap (FAB): a density trained by the alpha = 2 divergence.

For a target :math:`p = \tilde p / Z`, :math:`\tilde p = e^{-\beta U}`, the alpha = 2 divergence
of a normalised density :math:`q_\theta` (Midgley et al., "Flow Annealed Importance Sampling
Bootstrap", ICLR 2023, Sec. 3) is

.. math::

    D_2(p \,\|\, q_\theta) = \tfrac12 \left(\int \frac{p^2}{q_\theta}\,dx - 1\right)
    = \tfrac12\,\chi^2(p\,\|\,q_\theta) = \tfrac12\,\frac{\mathrm{Var}_{q_\theta}[\tilde p/q_\theta]}{Z^2} ,

half the relative variance of the importance weights :math:`\tilde p/q_\theta`: minimising it
makes the importance-sampling estimate of :math:`Z` from :math:`q_\theta` as precise as the
family allows, and it is mass covering (it diverges where :math:`q_\theta \ll p`). With
:math:`g_\theta = \tilde p^2/q_\theta` and :math:`Z_g = \int g_\theta\,dx`,

.. math::

    \nabla_\theta \log Z_g = -\frac{1}{Z_g}\int \frac{\tilde p^2}{q_\theta}\,\nabla_\theta\log q_\theta\,dx
    = -E_{g_\theta/Z_g}[\nabla_\theta \log q_\theta] ,

and :math:`\log Z_g = 2\log Z + \log(1 + 2 D_2)`, so this is the direction of :math:`\nabla_\theta D_2`
(positively rescaled). FAB estimates the expectation under :math:`g_\theta/Z_g`, the distribution
that minimises the variance of this estimate, with annealed importance sampling (AIS; Neal 2001)
from :math:`q_\theta` to :math:`g_\theta`: particles :math:`x_i` with log weights :math:`\ell_i`
and normalised weights :math:`\bar w_i`, and the surrogate loss

.. math::

    S(\theta) = -\sum_i \operatorname{sg}(\bar w_i)\,\log q_\theta(x_i) ,
    \qquad \nabla_\theta S \to \nabla_\theta \log Z_g ,

(sg: stopped gradient; the samples are not differentiated). The AIS is fepy's own particle
machinery: `fepy.Particles.from_base` with the current :math:`q_\theta` as base and the
annealed path :math:`q_\theta^{1-\lambda} g_\theta^{\lambda}` of `fepy.Wasserstein` (AIS) or
`fepy.WassersteinFisherRao` (SMC) with any move (`fepy.HMC` in the paper).

The prioritised replay buffer of the paper (Sec. 4, `ReplayBuffer`) keeps the AIS samples with
their log weights and the :math:`\log q` they were computed with, samples them with
probability :math:`\propto w`, and corrects for the change of :math:`q`: an AIS weight for
:math:`g_{\theta'} = \tilde p^2/q_{\theta'}` is one for :math:`g_\theta` times
:math:`q_{\theta'}/q_\theta`, so ``log_w += log q_old - log q_now`` is exact.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from ..families.density import AbstractDensity
from ..families.particles import Particles
from ..targets.energy import Energy
from ._base import AbstractSolver, check_target_and_family
from .._estimators import kish_ess
from .particle_flows import _AbstractParticleFlow
from .schedules import AbstractFixedSchedule
from .variational import _estimates, _figures


class _SquaredOverDensity(Energy):
    r"""The AIS target of FAB, :math:`g = \tilde p^2/q`, as an `Energy` at :math:`\beta = 1`:
    :math:`U_g(x) = 2\beta U(x) + \log q(x)` (dimensionless)."""

    target: Energy
    density: AbstractDensity
    dim: int = eqx.field(static=True)
    beta: float = 1.0

    def energy(self, x):
        return 2 * self.target.beta * self.target.energy(x) + self.density.log_prob(x)


class BufferState(eqx.Module):
    """Contents of a `ReplayBuffer`: a ring of ``capacity`` samples, empty slots at log w = -inf."""

    x: Float[Array, "capacity dim"]
    log_w: Float[Array, " capacity"]  # AIS log weight for g = p~^2 / q_old
    log_q: Float[Array, " capacity"]  # log q_old(x), the q the weight refers to
    next: Int[Array, ""]  # slot the next sample goes to
    size: Int[Array, ""]  # filled slots


class ReplayBuffer(eqx.Module):
    r"""FAB's prioritised replay buffer (Midgley et al. 2023, Sec. 4 and Algorithm 2).

    Holds the last ``capacity`` AIS samples :math:`x_i` with their log weights :math:`\ell_i` for
    :math:`g = \tilde p^2/q_{\mathrm{old}}` and :math:`\log q_{\mathrm{old}}(x_i)`. A training
    step draws ``samples`` indices with replacement with probability :math:`\propto e^{\ell_i}`
    (so that :math:`\frac1N\sum_j f(x_{i_j})` estimates :math:`\sum_i \bar w_i f(x_i)`), and takes
    the loss

    .. math::

        S(\theta) = -\frac1N \sum_j \min\!\left(\frac{q_{\mathrm{old}}(x_{i_j})}{\operatorname{sg}(q_\theta(x_{i_j}))},
        \mathtt{clip}\right) \log q_\theta(x_{i_j}) ,

    the ratio turning the stored weights into those for the current :math:`g_\theta` (the clip
    bounds the rare large ratios, at the price of a small bias). The drawn entries are then
    reweighted exactly, :math:`\ell_i \mathrel{+}= \log q_{\mathrm{old}}(x_i) - \log q_\theta(x_i)`,
    and :math:`q_{\mathrm{old}} \leftarrow q_\theta` (the others keep their :math:`q_{\mathrm{old}}`,
    which is always the one their weight refers to). ``updates`` such steps follow each AIS
    pass; training starts once ``min_size`` samples are stored (filled by AIS passes of the
    initial :math:`q` in ``init``).
    """

    capacity: int
    min_size: int
    updates: int = 4
    clip: float = 10.0

    def __check_init__(self):
        for name in ("capacity", "min_size", "updates"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"ReplayBuffer {name} must be a positive integer, got {n!r}")
        if self.min_size > self.capacity:
            raise ValueError(f"ReplayBuffer min_size {self.min_size} exceeds its capacity {self.capacity}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or not self.clip > 0:
            raise ValueError(f"ReplayBuffer clip must be a number > 0 (inf: no clip), got {self.clip!r}")

    def empty(self, dim: int, dtype) -> BufferState:
        return BufferState(jnp.zeros((self.capacity, dim), dtype), jnp.full(self.capacity, -jnp.inf, dtype),
                           jnp.zeros(self.capacity, dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def add(self, state: BufferState, x, log_w, log_q) -> BufferState:
        """Store samples in the oldest slots; a sample with a non-finite weight, position or
        log q is stored with weight 0 (log w = -inf) and never drawn."""
        n = x.shape[0]
        if n > self.capacity:
            raise ValueError(f"ReplayBuffer: {n} samples at once exceed its capacity {self.capacity}")
        ok = jnp.isfinite(log_w) & jnp.isfinite(log_q) & jnp.all(jnp.isfinite(x), axis=-1)
        slots = (state.next + jnp.arange(n)) % self.capacity
        return BufferState(
            state.x.at[slots].set(jnp.where(ok[:, None], x, 0.0)),
            state.log_w.at[slots].set(jnp.where(ok, log_w, -jnp.inf)),
            state.log_q.at[slots].set(jnp.where(ok, log_q, 0.0)),
            (state.next + n) % self.capacity,
            jnp.minimum(state.size + n, self.capacity),
        )

    def sample(self, state: BufferState, key, n: int) -> Int[Array, " n"]:
        """``n`` indices drawn with replacement with probability proportional to the weights
        (inverse CDF: O(capacity + n log capacity) memory and time, where a Gumbel-max draw
        would hold n x capacity numbers)."""
        cdf = jnp.cumsum(jax.nn.softmax(state.log_w))
        u = jax.random.uniform(key, (n,), cdf.dtype) * cdf[-1]
        return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), self.capacity - 1)

    def reweight(self, state: BufferState, index, log_q_now) -> BufferState:
        r"""Entries ``index`` refer to the current :math:`q` from now on:
        :math:`\ell \mathrel{+}= \log q_{\mathrm{old}} - \log q_{\mathrm{now}}`."""
        log_w = state.log_w[index] + state.log_q[index] - log_q_now
        return eqx.tree_at(lambda s: (s.log_w, s.log_q), state,
                           (state.log_w.at[index].set(log_w), state.log_q.at[index].set(log_q_now)))

    def loss(self, family: AbstractDensity, x, log_q_old):
        """The surrogate loss of drawn samples and the log q they were evaluated with now."""
        log_q = family.log_prob(x)
        ratio = jnp.minimum(jnp.exp(log_q_old - jax.lax.stop_gradient(log_q)), self.clip)
        return -jnp.mean(ratio * log_q), jax.lax.stop_gradient(log_q)


class FABState(eqx.Module):
    """State of `FAB` between steps."""

    step: Int[Array, ""]
    opt_state: optax.OptState
    step_size: Float[Array, " islands"]  # the AIS move's step sizes, carried from pass to pass
    buffer: BufferState | None
    energy_evals: Float[Array, ""]  # target energy-and-gradient evaluations so far
    summary_key: Array


class FAB(AbstractSolver):
    r"""Train a density :math:`q_\theta` (a `fepy.Flow`) by the alpha = 2 divergence with AIS
    towards :math:`\tilde p^2/q_\theta` (FAB, Midgley et al., ICLR 2023); see the module text.

    Each step runs one AIS pass: ``samples`` particles of :math:`q_\theta` (`Particles.from_base`)
    annealed by ``ais`` (`fepy.Wasserstein`: AIS, FAB's choice, or `fepy.WassersteinFisherRao`:
    SMC; its move, e.g. `fepy.HMC`, and a fixed ``schedule`` from 0 that reaches 1 after
    ``ais_steps`` steps) along :math:`q_\theta^{1-\lambda}(\tilde p^2/q_\theta)^\lambda`.
    Without ``buffer``, one optimizer step on the surrogate loss
    :math:`-\sum_i \operatorname{sg}(\bar w_i)\log q_\theta(x_i)` of that pass (`loss`); with a
    `ReplayBuffer`, the pass is stored and ``buffer.updates`` optimizer steps follow on samples
    drawn from the buffer. The move's step sizes carry over from one pass to the next (they
    adapt when the move does).

    Statistics per step: ``loss``; ``ais_log_z`` (:math:`\log\hat Z_g` of the pass) and
    ``ais_ess_fraction`` (Kish ESS of its weights / ``samples``); ``energy_evals``, the target
    energy-and-gradient evaluations so far (AIS: ``samples`` x (1 + ``ais_steps`` x moves x
    leapfrog steps) per pass, as FAB counts them; :math:`\log q_\theta` is evaluated as often);
    and the importance figures of `ReverseKL` (``log_z``, ``ess``, ``free_energy``, ...) of the
    pass's starting samples :math:`x_i \sim q_\theta`, which the AIS evaluates anyway. The
    summary: those figures on ``summary_samples`` fresh samples of the final :math:`q_\theta`
    (``summary_samples`` more evaluations, not counted), ``energy_evals`` and ``steps``.
    """

    optimizer: optax.GradientTransformation
    ais: _AbstractParticleFlow
    ais_steps: int
    samples: int = 256
    buffer: ReplayBuffer | None = None
    summary_samples: int = 4096

    def __check_init__(self):
        for name in ("samples", "summary_samples"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise ValueError(f"FAB {name} must be an integer >= 2, got {n!r}")
        if not isinstance(self.ais, _AbstractParticleFlow) or self.ais.move is None:
            raise TypeError("FAB ais must be a particle solver with a move (fepy.Wasserstein or "
                            f"fepy.WassersteinFisherRao), got {type(self.ais).__name__}")
        if isinstance(self.ais_steps, bool) or not isinstance(self.ais_steps, int) or self.ais_steps < 1:
            raise ValueError(f"FAB ais_steps must be a positive integer, got {self.ais_steps!r}")
        schedule = self.ais.schedule
        if not isinstance(schedule, AbstractFixedSchedule):
            raise TypeError(f"FAB needs a fixed AIS schedule (e.g. fepy.Linear), got {type(schedule).__name__}")
        start, end = float(schedule(jnp.asarray(0))), float(schedule(jnp.asarray(self.ais_steps)))
        if start != 0.0 or end != 1.0:
            raise ValueError(f"FAB's AIS schedule must go from 0 to 1 in ais_steps={self.ais_steps} steps, "
                             f"it goes from {start} to {end}")
        if self.samples % self.ais.islands:
            raise ValueError(f"FAB samples {self.samples} are not divisible by the AIS islands {self.ais.islands}")
        if self.buffer is not None and self.buffer.capacity < self.samples:
            raise ValueError(f"FAB buffer capacity {self.buffer.capacity} is below one AIS pass ({self.samples})")

    # ------------------------------------------------------------------ the pieces

    def anneal(self, target: Energy, family: AbstractDensity, key, step_size=None):
        r"""One AIS pass from :math:`q` = ``family`` to :math:`g = \tilde p^2/q`.

        Returns the positions :math:`x_i`, the log weights :math:`\ell_i` (each :math:`e^{\ell_i}`,
        and within an SMC island their mean, estimates :math:`Z_g = \int \tilde p^2/q\,dx` without
        bias: :math:`\log\frac1n\sum_i e^{\ell_i}` is the pass's :math:`\log\hat Z_g`),
        :math:`\log q(x_i)`, the log importance weights :math:`\log\tilde p - \log q` of the
        starting samples :math:`x_i^{(0)} \sim q` with their energies, the move's step sizes after
        the pass and the target evaluations. ``step_size`` (per island) replaces the move's own.
        """
        g = _SquaredOverDensity(target, family, target.dim)
        init_key, run_key = jax.random.split(key)
        particles = Particles.from_base(family, self.samples, key=init_key)
        state = self.ais.init(g, particles, init_key)
        if step_size is not None:
            state = eqx.tree_at(lambda s: s.step_size, state, step_size)
        start = state.points
        log_p0 = 0.5 * (start.log_target + start.log_base)  # log g = 2 log p~ - log q
        log_w0, energy0 = log_p0 - start.log_base, -log_p0 / target.beta

        # the scan carries the arrays only: the base (a flow) may hold functions
        dynamic, static = eqx.partition((particles, state), eqx.is_array)

        def body(carry, k):
            p, s = eqx.combine(carry, static)
            p, s, _ = self.ais.step(g, p, s, jax.random.fold_in(run_key, k))
            return eqx.filter((p, s), eqx.is_array), None

        dynamic, _ = jax.lax.scan(body, dynamic, jnp.arange(self.ais_steps))
        particles, state = eqx.combine(dynamic, static)
        _, pooled = self.ais._global_log_weights(particles, state)
        log_w = pooled + math.log(self.samples // self.ais.islands)
        return (particles.positions, log_w, state.points.log_base, log_w0, energy0, state.step_size,
                state.energy_evals)

    @staticmethod
    def loss(family: AbstractDensity, x, log_w):
        r"""The surrogate :math:`-\sum_i \bar w_i \log q(x_i)`, :math:`\bar w` the normalised
        (constant) weights of ``log_w``; its gradient estimates :math:`\nabla_\theta\log Z_g`."""
        w = jax.lax.stop_gradient(jax.nn.softmax(log_w))
        log_q = family.log_prob(x)
        return -jnp.sum(jnp.where(w > 0, w * log_q, 0.0))

    # ------------------------------------------------------------------ the solver

    def init(self, target: Energy, family: AbstractDensity, key) -> FABState:
        check_target_and_family(self, target, family, Energy, AbstractDensity, "density")
        if not callable(getattr(family, "log_prob", None)):
            raise TypeError(f"FAB needs a family with a log_prob, got {type(family).__name__}")
        params = eqx.filter(family, eqx.is_inexact_array)
        dtype = jnp.result_type(float)
        step_size = jnp.full(self.ais.islands, self.ais.move.step_size, dtype)
        buffer, evals = None, jnp.zeros((), dtype)
        if self.buffer is not None:
            passes = -(-self.buffer.min_size // self.samples)

            def fill(carry, k):
                buf, h, n = carry
                x, log_w, log_q, _, _, h, evals = self.anneal(target, family, jax.random.fold_in(key, k), h)
                return (self.buffer.add(buf, x, log_w, log_q), h, n + evals), None

            (buffer, step_size, evals), _ = jax.lax.scan(
                fill, (self.buffer.empty(family.dim, dtype), step_size, evals), jnp.arange(passes))
        summary_key = jax.random.key_data(key)
        return FABState(jnp.zeros((), jnp.int32), self.optimizer.init(params), step_size, buffer, evals, summary_key)

    def step(self, target: Energy, family: AbstractDensity, state: FABState, key):
        params, static = eqx.partition(family, eqx.is_inexact_array)
        ais_key, update_key = jax.random.split(key)
        x, log_w, log_q, log_w0, energy0, step_size, evals = self.anneal(target, family, ais_key, state.step_size)
        stats = dict(_figures(target, log_w0, energy0), ais_log_z=jax.nn.logsumexp(log_w) - math.log(self.samples),
                     ais_ess_fraction=jnp.nan_to_num(kish_ess(log_w)) / self.samples)
        opt_state, buffer = state.opt_state, state.buffer
        if self.buffer is None:
            value, gradient = jax.value_and_grad(lambda p: self.loss(eqx.combine(p, static), x, log_w))(params)
            updates, opt_state = self.optimizer.update(gradient, opt_state, params)
            params = eqx.apply_updates(params, updates)
        else:
            buffer = self.buffer.add(buffer, x, log_w, log_q)

            def update(carry, k):
                p, o, buf = carry
                index = self.buffer.sample(buf, k, self.samples)
                (value, log_q_now), gradient = jax.value_and_grad(
                    lambda pp: self.buffer.loss(eqx.combine(pp, static), buf.x[index], buf.log_q[index]),
                    has_aux=True)(p)
                updates, o = self.optimizer.update(gradient, o, p)
                return (eqx.apply_updates(p, updates), o, self.buffer.reweight(buf, index, log_q_now)), value

            (params, opt_state, buffer), values = jax.lax.scan(
                update, (params, opt_state, buffer), jax.random.split(update_key, self.buffer.updates))
            value = jnp.mean(values)
        energy_evals = state.energy_evals + evals
        new_state = FABState(state.step + 1, opt_state, step_size, buffer, energy_evals, state.summary_key)
        stats.update(loss=value, energy_evals=energy_evals)
        return eqx.combine(params, static), new_state, stats

    def summary(self, target: Energy, family: AbstractDensity, state: FABState):
        key = jax.random.wrap_key_data(state.summary_key)
        log_w, energy = _estimates(target, family, key, self.summary_samples)
        return dict(**_figures(target, log_w, energy), energy_evals=state.energy_evals, steps=state.step)
