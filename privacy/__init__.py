"""privacy: LADP (layer-wise adaptive DP-SGD), the DP-SGD baseline, accounting, PATE, the private
hyper-parameter search and the audit.

The front door, in the spirit of Opacus's `PrivacyEngine.make_private`:

    from privacy import LADPConfig, make_private
    engine = make_private(model, x, y, config=LADPConfig(epsilon=3), public_x=px, public_y=py)
    result = engine.run()  # result.spend: the accounted (ε, δ) of the steps taken

Only names are gathered here; submodules never import from this file.
"""

from privacy.accounting import ACCOUNTANTS, compute_epsilon, format_epsilon, max_steps_within_budget
from privacy.calibration import calibrate_noise_multiplier
from privacy.composition import GaussianSteps, Guarantee, Mechanism, Opaque, RDPCurve, compose
from privacy.config import LADPConfig
from privacy.ladp import LADPEngine, LADPResult, PrivacySpend, make_private, train_ladp

__all__ = [
    "ACCOUNTANTS",
    "GaussianSteps",
    "Guarantee",
    "LADPConfig",
    "LADPEngine",
    "LADPResult",
    "Mechanism",
    "Opaque",
    "PrivacySpend",
    "RDPCurve",
    "calibrate_noise_multiplier",
    "compose",
    "compute_epsilon",
    "format_epsilon",
    "make_private",
    "max_steps_within_budget",
    "train_ladp",
]
