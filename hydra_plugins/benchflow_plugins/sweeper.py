"""``hydra/sweeper=benchflow``: Hydra's basic sweeper, in the sweep's ``order``, without
its second composition.

Hydra's basic sweeper expands a sweep into one job per configuration. This one
then puts the jobs in the order the sweep asks for (``order``,
:func:`benchflow.config.compose.order_jobs`): ``interleaved`` (the default) and
``random`` split a configuration with repetitions into one job per repetition
(``repetition_index=k``) and launch them repetition-major or shuffled from the
seed; ``blocked`` keeps Hydra's jobs. The planned order is written to the sweep
directory (``order.json``), where each trial finds its position. Any launcher
(the basic one, benchflow's Slurm arrays) receives the jobs in this order.

The basic sweeper also composes every job once more before launching
("validate the batch"), about 0.2 s a job. ``python -m benchflow`` has already
composed and validated every job of the sweep
(``benchflow.config.PREVALIDATED``), so those are not composed again; a job
benchflow did not see is checked as Hydra does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class BenchflowSweeper(BasicSweeper):
    def split_arguments(  # type: ignore[override]  # an instance method here: it needs the config
        self, overrides: list[Any], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        from benchflow.config import EXIT_CONFIG, PREVALIDATED, ConfigError
        from benchflow.config.compose import order_jobs
        from benchflow.sweeps.jobs import write_order

        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        try:
            specs = [self._spec(job) for job in jobs]
            ordered = order_jobs(jobs, specs)
        except ConfigError as exc:
            print(f"benchflow: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG) from None
        for job, spec in ordered:
            PREVALIDATED.setdefault(tuple(job), spec)
        if self.config is not None:
            write_order(Path(str(self.config.hydra.sweep.dir)), ordered)
        launch = [job for job, _ in ordered]
        return list(BasicSweeper.split_overrides_to_chunks(launch, max_batch_size))

    def _spec(self, job: list[str]):
        from benchflow.config import PREVALIDATED, validate

        spec = PREVALIDATED.get(tuple(job))
        if spec is None:  # a sweep not started by `python -m benchflow`
            assert self.hydra_context is not None and self.config is not None
            from omegaconf import OmegaConf

            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            tree = OmegaConf.to_container(cfg, resolve=False)
            tree.pop("hydra", None)
            spec = PREVALIDATED[tuple(job)] = validate(OmegaConf.create(tree), tuple(job))
        return spec

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from benchflow.config import PREVALIDATED

        unseen = [job for job in batch if tuple(job) not in PREVALIDATED]
        if unseen:
            super().validate_batch_is_legal(unseen)
