"""Every `smsfleet` command runs on uvloop where it is installed (a dependency on Linux and macOS)."""

import asyncio

from smsfleet.cli import run


def test_commands_run_on_uvloop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(loop_module()).startswith("uvloop")
