r"""Strong gravitational lensing: a differentiable forward model in lenstronomy's conventions.

Angles are in arcsec, surface brightness in flux per arcsec² and images in flux per pixel
(e.g. counts/s). Mass profiles (:class:`SIE` with an optional core, :class:`EPL`,
:class:`Shear`, :class:`PointMass`, summed by :class:`MassModel`) give deflections,
convergence and potential; light profiles (:class:`SersicElliptic`, :class:`Gaussian`,
:class:`PixelatedSource`, summed by :class:`LightModel`) give surface brightness;
:class:`ImageModel` ray-shoots a supersampled :class:`PixelGrid`, averages to pixels,
convolves with a :class:`PixelPSF` or :class:`GaussianPSF` and draws noise from a
:class:`NoiseModel`; :func:`linear_inversion` solves for a pixelated source exactly. The
parameter names are those of lenstronomy's ``kwargs`` (``SIE(**kwargs_lens[0])``) and the
results equal lenstronomy 1.14's to float64 round-off (see ``tests/test_lensing.py``).
:mod:`.rim` has a Recurrent Inference Machine (:class:`RIM`, trained on lenses simulated on
the fly by :class:`LensSimulator`, :func:`train_rim`) and the MAP baselines it is compared with.
"""

from .imaging import (
    GaussianPSF as GaussianPSF,
    ImageModel as ImageModel,
    NoiseModel as NoiseModel,
    PixelGrid as PixelGrid,
    PixelPSF as PixelPSF,
)
from .light import (
    AbstractLightProfile as AbstractLightProfile,
    Gaussian as Gaussian,
    LightModel as LightModel,
    SersicElliptic as SersicElliptic,
)
from .mass import (
    EPL as EPL,
    SIE as SIE,
    AbstractMassProfile as AbstractMassProfile,
    MassModel as MassModel,
    PointMass as PointMass,
    Shear as Shear,
)
from .pixelated import (
    Inversion as Inversion,
    PixelatedSource as PixelatedSource,
    bilinear_weights as bilinear_weights,
    lensing_matrix as lensing_matrix,
    linear_inversion as linear_inversion,
    regularization_matrix as regularization_matrix,
)
from .plots import plot_corner as plot_corner, plot_reconstruction as plot_reconstruction
from .posterior import (
    LensPosterior as LensPosterior,
    LensSystem as LensSystem,
    Parameters as Parameters,
    SourceMarginalPosterior as SourceMarginalPosterior,
    evidence_scan as evidence_scan,
)
from .rim import (
    RIM as RIM,
    ConvGRUCell as ConvGRUCell,
    LensBatch as LensBatch,
    LensLikelihood as LensLikelihood,
    LensPrior as LensPrior,
    LensSimulator as LensSimulator,
    MAPResult as MAPResult,
    RIMTrajectory as RIMTrajectory,
    TrainingHistory as TrainingHistory,
    evidence_strength as evidence_strength,
    map_inversion as map_inversion,
    map_joint as map_joint,
    rim_loss as rim_loss,
    simulate_batch as simulate_batch,
    source_mse as source_mse,
    train_rim as train_rim,
)
