"""The OST scorer: one-step utilities (naive reference, exact, first-order, hybrid).

from ostselect.scoring import ScoreConfig, score
table = score(pool_samples, anchor_samples, proxy, ScoreConfig(mode="exact", eta=1e-3))
"""

from ostselect.scoring.api import score
from ostselect.scoring.config import MODES, ScoreConfig
from ostselect.scoring.updates import SGD, AdamW, make_update_rule

__all__ = ["MODES", "SGD", "AdamW", "ScoreConfig", "make_update_rule", "score"]
