"""Conductor service (placeholder; being written)."""


class ConductorManager:
    def __init__(self, rt):  # type: ignore[no-untyped-def]
        self.rt = rt

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
