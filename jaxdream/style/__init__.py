"""Gatys et al. neural style transfer, with jcjohnson/neural-style's defaults and loss scale.

:mod:`.plan` checks every setting and reads every image (:func:`plan_style`, no device work);
:mod:`.run` carries a plan out (:func:`run_plan`: placement, coarse-to-fine scales, chunks of
iterations reported through a callback); :mod:`.programs` holds the compiled programs (the
objective of :mod:`jaxdream.objectives.gatys` with an optimiser of :mod:`jaxdream.optim`).

Example:
    >>> import jaxdream
    >>> result = jaxdream.stylize("cat.jpg", ["starry.jpg"], size=256,
    ...                           num_iterations=200)  # doctest: +SKIP
    >>> jaxdream.media.save_image("out.png", result.image)  # doctest: +SKIP
"""

from ..objectives.gatys import CONTENT_LAYERS, STYLE_LAYERS, Objective, objective, prepare_targets
from .plan import DEFAULT_LEARNING_RATE, INITS, OPTIMIZERS, StylePlan, default_scales, plan_style
from .run import StyleProgress, StyleResult, run_plan, split_contents, stylize

__all__ = ["stylize", "plan_style", "run_plan", "split_contents", "StylePlan", "StyleResult", "StyleProgress",
           "default_scales", "Objective", "objective", "prepare_targets", "OPTIMIZERS", "INITS",
           "DEFAULT_LEARNING_RATE", "CONTENT_LAYERS", "STYLE_LAYERS"]
