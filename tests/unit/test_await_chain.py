import asyncio

from cartstream.streams.runtime.faust_compat.await_chain import await_chain


async def _inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def _outer(gate: asyncio.Event) -> None:
    await _inner(gate)


def test_the_chain_goes_down_to_where_a_task_waits() -> None:
    async def main() -> list[str]:
        gate = asyncio.Event()
        task = asyncio.ensure_future(_outer(gate))
        await asyncio.sleep(0)
        chain = await_chain(task)
        gate.set()
        await task
        assert await_chain(task) == []  # done: nothing waits
        return chain

    chain = asyncio.run(main())
    names = [line.split()[-1] for line in chain if " " in line]
    assert names[:3] == ["_outer", "_inner", "wait"], chain
