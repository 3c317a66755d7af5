"""``noop``: an operation that does nothing — the load engine's own ceiling.

With ``service.keys=N`` each operation also draws a key from the trial's access
law (``access.*``, one :class:`~benchflow.workload.keys.KeyChooser` per worker),
and any mix's classes are accepted: the ceiling of the engine with a workload's
bookkeeping, beside the plain one (``make bench``).
"""

from __future__ import annotations

from pydantic import Field

from benchflow.workload.keys import AccessConfig, KeyChooser
from drivers.base import Driver, ServiceSettings


class NoopSettings(ServiceSettings):
    async_op: bool = False
    keys: int = Field(0, ge=0, description="draw a key of this key space per operation; 0: none")


class NoopDriver(Driver):
    name = "noop"
    family = "calibration"
    description = "does nothing; measures the harness's own ceiling (ops/s, overhead)"
    Settings = NoopSettings
    batch_meaning = "items reported per operation"
    mix_classes = "any"  # classes change nothing: the bookkeeping's cost is what is measured

    @classmethod
    def inactive_keys(cls, settings) -> tuple[str, ...]:
        return ("keys",) if not settings.keys else ()

    def __init__(self, settings: NoopSettings, trial) -> None:
        super().__init__(settings, trial)
        self.batch = trial.run.batch
        self.access = trial.run.access or AccessConfig()
        self.seed = trial.run.seed
        if settings.async_op:
            # The engine picks threads or the event loop from the method's kind.
            self.operation = self._async_operation  # type: ignore[method-assign]

    def open_worker(self, worker: int):
        if not self.settings.keys:
            return None
        return KeyChooser(self.settings.keys, self.access, self.seed, stream=worker).stream()

    def operation(self, ctx) -> int:
        if ctx.state is not None:
            next(ctx.state)
        return self.batch

    async def _async_operation(self, ctx) -> int:
        if ctx.state is not None:
            next(ctx.state)
        return self.batch
