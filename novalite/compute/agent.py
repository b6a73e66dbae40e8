"""Compute agent (placeholder; being written)."""


class ComputeAgent:
    def __init__(self, rt, host):  # type: ignore[no-untyped-def]
        self.rt = rt

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
