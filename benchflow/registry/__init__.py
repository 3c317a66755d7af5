"""The registry: benchmark targets in the MLflow model registry.

A target (a model and serving engine with its settings, an index configuration,
...) is a registered model version whose spec is a YAML artifact; aliases such
as ``@champion`` point at versions. :mod:`.specs` says what a target is,
:mod:`.lookup` resolves a reference, :mod:`.register` writes, :mod:`.listing`
lists. Merging a target into a config is the configuration's job
(:mod:`benchflow.config.targets`); promotion is analysis
(:mod:`benchflow.analysis.promotion`).
"""

from benchflow.registry.listing import (
    TargetSummary,
    list_targets,
    runs_of,
)
from benchflow.registry.lookup import (
    resolve,
)
from benchflow.registry.register import (
    archive,
    delete_alias,
    register,
    set_alias,
    spec_from_run,
)
from benchflow.registry.specs import (
    DESCRIPTIVE_TAGS,
    KIND_TAG,
    PREVIOUS_CHAMPION,
    SPEC_DIR,
    SPEC_FILE,
    STAGES,
    TARGETS_EXPERIMENT,
    ResolvedTarget,
    TargetError,
    TargetRef,
    TargetSpec,
    parse_ref,
    parse_spec,
)

__all__ = [
    "DESCRIPTIVE_TAGS",
    "KIND_TAG",
    "PREVIOUS_CHAMPION",
    "SPEC_DIR",
    "SPEC_FILE",
    "STAGES",
    "TARGETS_EXPERIMENT",
    "ResolvedTarget",
    "TargetError",
    "TargetRef",
    "TargetSpec",
    "TargetSummary",
    "archive",
    "delete_alias",
    "list_targets",
    "parse_ref",
    "parse_spec",
    "register",
    "resolve",
    "runs_of",
    "set_alias",
    "spec_from_run",
]
