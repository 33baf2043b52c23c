"""Optimisers on pixels as pure ``(init, update)`` pairs with state pytrees (optax's way), and the
loop policy every driver shares."""

from .adam import AdamState, adam_average, adam_init, adam_update
from .driver import in_jit_loop_default
from .lbfgs import (LBFGS_HISTORY_BUDGET, PYRAMID_LEVELS, LbfgsState, compact_direction, history_cap, lbfgs_init,
                    lbfgs_update, pyramid_preconditioner)

__all__ = ["AdamState", "adam_average", "adam_init", "adam_update", "in_jit_loop_default", "LbfgsState",
           "lbfgs_init", "lbfgs_update", "pyramid_preconditioner", "PYRAMID_LEVELS", "LBFGS_HISTORY_BUDGET",
           "history_cap", "compact_direction"]
