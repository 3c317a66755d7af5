"""Results: what a trial leaves behind, on disk first.

The result schema (``metrics.json``, :mod:`.schema`), how it is built from the
recording and judged valid (:mod:`.build`), the files and their readers
(:mod:`.files`), the identity of a trial (:mod:`.identity`), what the monitor
samples (:mod:`.monitor`), where the result came from (:mod:`.lineage`), and the
trial's logs (:mod:`.logs`).
"""

from benchflow.results.build import (
    build,
    distribution,
    judge,
    lenient_distribution,
    size_rate,
    too_few_samples,
)
from benchflow.results.files import (
    load_result,
    read_csv,
    read_json,
    write_csv,
    write_json,
    write_result_files,
    write_yaml,
)
from benchflow.results.schema import (
    MIN_SAMPLES,
    PERCENTILES,
    SCHEMA_VERSION,
    Distribution,
    Errors,
    Load,
    Resource,
    Throughput,
    TrialResult,
    Validity,
    metrics_flat,
)

__all__ = [
    "MIN_SAMPLES",
    "PERCENTILES",
    "SCHEMA_VERSION",
    "Distribution",
    "Errors",
    "Load",
    "Resource",
    "Throughput",
    "TrialResult",
    "Validity",
    "build",
    "distribution",
    "judge",
    "lenient_distribution",
    "load_result",
    "metrics_flat",
    "read_csv",
    "read_json",
    "size_rate",
    "too_few_samples",
    "write_csv",
    "write_json",
    "write_result_files",
    "write_yaml",
]
