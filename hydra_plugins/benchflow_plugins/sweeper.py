"""``hydra/sweeper=benchflow``: Hydra's basic sweeper without its second composition.

The basic sweeper composes every job once more before launching ("validate the
batch"), about 0.2 s a job. ``python -m benchflow`` has already composed and
validated every job of the sweep (``benchflow.config.PREVALIDATED``), so those
are not composed again; a job benchflow did not see is checked as Hydra does.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class BenchflowSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from benchflow.config import PREVALIDATED

        unseen = [job for job in batch if tuple(job) not in PREVALIDATED]
        if unseen:
            super().validate_batch_is_legal(unseen)
