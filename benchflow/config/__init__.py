"""Configuration: what a trial is, before anything runs.

Hydra composes the config (:mod:`.compose`), it is validated into typed settings
(:mod:`.validate`, :mod:`.schema`) with a registered target merged in first
(:mod:`.targets`), and the resource needs and hard limits are checked
(:mod:`.limits`). Everything downstream runs from the validated
:class:`TrialSpec`; nothing is started before this room has said yes.
"""

from benchflow.config.compose import (
    PREVALIDATED,
    Composer,
    compose_trials,
    composing,
    sweep_jobs,
)
from benchflow.config.schema import (
    CONFIG_NAME,
    EXIT_CONFIG,
    BenchConfig,
    BudgetConfig,
    ConfigError,
    MonitorConfig,
    TrackingConfig,
    TrialSpec,
    ValidityRules,
    conf_dir,
)
from benchflow.config.validate import (
    needs_declared,
    validate,
)

__all__ = [
    "CONFIG_NAME",
    "EXIT_CONFIG",
    "PREVALIDATED",
    "BenchConfig",
    "BudgetConfig",
    "Composer",
    "ConfigError",
    "MonitorConfig",
    "TrackingConfig",
    "TrialSpec",
    "ValidityRules",
    "compose_trials",
    "composing",
    "conf_dir",
    "needs_declared",
    "sweep_jobs",
    "validate",
]
