"""50 connect/disconnect cycles against a real relay with real aiortc peers: afterwards no
more threads, asyncio tasks, open peer connections or file descriptors than after warm-up,
and resident memory about flat."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.register_assert_rewrite("conftest_browser")

from conftest_browser import ColourTrack, connect, make_relay, relay_server, wait_until  # noqa: E402

pytest_plugins = ["conftest_browser"]  # fixtures: invert_engine

CYCLES = 50
WARMUP = 5
POOL_THREADS = 4


#: Resident memory growth allowed from warm-up to the end: allocator slack (measured here:
#: +1 to +10 MB over the 45 cycles); a peer's codecs and buffers kept per cycle would not fit.
RSS_SLACK_MB = 48


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def rss_mb() -> float:
    """Resident memory of this process in MB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["relay", "receive"])
def test_connect_disconnect_cycles_leak_nothing(invert_engine, mode: str) -> None:
    async def run() -> None:
        # aiortc encodes in the loop's default executor, a pool that may add threads up to
        # its bound under load; start all of them now so any growth later is a real leak
        pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="default-pool")
        asyncio.get_running_loop().set_default_executor(pool)
        gate = threading.Barrier(POOL_THREADS)
        for future in [pool.submit(gate.wait, 10) for _ in range(POOL_THREADS)]:
            future.result()
        source = ColourTrack(160, 120) if mode == "receive" else None
        relay = make_relay(invert_engine, source=source, max_peers=2)

        def counts() -> tuple[int, int, int, int]:
            return (
                threading.active_count(),
                len(asyncio.all_tasks()),
                len(relay.peers),
                open_fds(),
            )

        async with relay_server(relay) as url:
            baseline = None
            rss_baseline = 0.0
            peak_threads = 0
            for cycle in range(CYCLES):
                threads_before = threading.active_count()
                if mode == "relay":
                    client = await connect(url, track=ColourTrack(160, 120), channel=True)
                else:
                    client = await connect(url, recvonly=True, channel=True)
                await wait_until(lambda c=client: len(c.frames) >= 2, f"frames in cycle {cycle}")
                peak_threads = max(peak_threads, threading.active_count())
                await client.close()
                await wait_until(lambda: not relay.peers, f"the server to free peer {cycle}")
                if cycle + 1 == WARMUP:
                    # the closed peer's threads (decoder, encoder) join: no fixed sleep
                    await wait_until(
                        lambda t=threads_before: threading.active_count() <= t,
                        "the warm-up peer's threads to end",
                        deadline_s=10,
                    )
                    baseline = counts()
                    rss_baseline = rss_mb()
            assert baseline is not None

            # let closing work finish (decoder threads join, tasks unwind), then compare
            def settled() -> bool:
                threads, tasks, peers, fds = counts()
                return (
                    threads <= baseline[0]
                    and tasks <= baseline[1]
                    and peers == 0
                    and fds <= baseline[3]
                )

            try:
                await wait_until(settled, "counts back to the warm-up baseline", deadline_s=10)
            finally:
                print(
                    f"threads/tasks/peers/fds: after warm-up {baseline}, after {CYCLES} "
                    f"cycles {counts()}, peak threads {peak_threads}"
                )
            assert relay.peers == frozenset()
            grown = rss_mb() - rss_baseline
            print(f"resident memory: {rss_baseline:.0f} MB after warm-up, +{grown:.1f} MB after")
            assert grown < RSS_SLACK_MB, f"resident memory grew {grown:.0f} MB in {CYCLES} cycles"

    asyncio.run(run())
