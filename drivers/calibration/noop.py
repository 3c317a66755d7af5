"""``noop``: an operation that does nothing — the load engine's own ceiling."""

from __future__ import annotations

from drivers.base import Driver, ServiceSettings


class NoopSettings(ServiceSettings):
    async_op: bool = False


class NoopDriver(Driver):
    name = "noop"
    family = "calibration"
    description = "does nothing; measures the harness's own ceiling (ops/s, overhead)"
    Settings = NoopSettings
    batch_meaning = "items reported per operation"

    def __init__(self, settings: NoopSettings, trial) -> None:
        super().__init__(settings, trial)
        self.batch = trial.run.batch
        if settings.async_op:
            # The engine picks threads or the event loop from the method's kind.
            self.operation = self._async_operation  # type: ignore[method-assign]

    def operation(self, ctx) -> int:
        return self.batch

    async def _async_operation(self, ctx) -> int:
        return self.batch
