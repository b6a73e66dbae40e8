"""Scheduler service (placeholder; being written)."""


class SchedulerManager:
    def __init__(self, rt):  # type: ignore[no-untyped-def]
        self.rt = rt

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
