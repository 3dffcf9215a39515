"""``sharpcam serve`` (``sharpcam.webrtc.main``): bad options are one clear line and a
non-zero exit; the real server process prints its address, relays, streams a file, warns
off loopback, and closes its peers on Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

pytest.register_assert_rewrite("conftest_browser")

from conftest_browser import (  # noqa: E402
    COLOUR,
    INVERTED_COLOUR,
    ColourTrack,
    connect,
    mean_rgb,
    post_json,
    split_token,
    wait_until,
    write_clip,
)

from sharpcam.webrtc import ServeSettings, main, url_for  # noqa: E402
from sharpcam.webrtc.command import QUIET_LOGGERS, configure_logging  # noqa: E402

pytest_plugins = ["conftest_browser"]  # fixtures: invert_model, invert_x2_model

REPO = Path(__file__).resolve().parent.parent


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--max-peers", "0"], 2, "--max-peers must be at least 1"),
        (["--port", "70000"], 2, "--port must be in 0..65535"),
        (["--source", "no-such-clip.mp4"], 1, "--source no-such-clip.mp4: no such video file"),
        (["--host", "999.1.1.1"], 2, "--host 999.1.1.1 is not a valid IP address"),
        (["--host", "::1::2"], 2, "--host ::1::2 is not a valid IP address"),
        (["--connect-timeout", "0"], 2, "--connect-timeout must be positive"),
        (["--allow-host", "http://cam.example.org/"], 2, "--allow-host 'http://cam.example"),
        (["--allow-host", "cam.example.org:443"], 2, "without scheme or port"),
        (["--max-connections", "0"], 2, "--max-connections must be at least 1"),
    ],
)
def test_bad_options_are_one_line_and_exit_non_zero(
    invert_model: Path, capsys, argv: list[str], code: int, message: str
) -> None:
    got, err = run_main([*argv, "--model", str(invert_model)], capsys)
    assert got == code
    assert message in err and err.startswith("sharpcam serve: error:") and "\n" not in err


def test_a_camera_source_that_does_not_open_suggests_serve_flags(invert_model, capsys) -> None:
    # no camera here (and a fake index beyond any there could be): the advice is serve's own
    code, err = run_main(["--source", "9", "--model", str(invert_model)], capsys)
    assert code == 1 and err.startswith("sharpcam serve: error: --source 9:")
    assert "--input" not in err and "--device" not in err and "--source clip.mp4" in err
    assert "\n" not in err


def test_an_address_of_another_machine_is_named_as_such(invert_model, capsys) -> None:
    code, err = run_main(
        ["--host", "192.0.2.1", "--port", "0", "--model", str(invert_model)], capsys
    )
    assert code == 1 and err.startswith("sharpcam serve: error: cannot listen on --host")
    assert "192.0.2.1" in err and "not an address of this machine" in err
    assert "--port" not in err and "\n" not in err


def test_upscale_2_with_a_restore_model_is_one_line(invert_model: Path, capsys) -> None:
    code, err = run_main(["--upscale", "2", "--model", str(invert_model), "--port", "0"], capsys)
    assert code != 0 and err.startswith("sharpcam serve: error:") and "\n" not in err
    assert "invert.onnx is a ×1" in err and "--upscale 2" in err, err


def test_a_missing_model_names_the_file(tmp_path: Path, capsys) -> None:
    code, err = run_main(["--model", str(tmp_path / "none.onnx"), "--port", "0"], capsys)
    assert code == 1 and "none.onnx does not exist" in err and "\n" not in err


def test_an_unknown_provider_is_an_argparse_error(invert_model: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--provider", "gpu", "--model", str(invert_model)])
    assert info.value.code == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_a_port_in_use_is_one_line(invert_model: Path, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_main(["--port", str(port), "--model", str(invert_model)], capsys)
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_settings_know_loopback() -> None:
    assert ServeSettings().is_loopback and ServeSettings(host="::1").is_loopback
    assert ServeSettings(host="localhost").is_loopback
    assert not ServeSettings(host="0.0.0.0").is_loopback
    assert not ServeSettings(host="example.org").is_loopback
    assert url_for("0.0.0.0", 8080) == "http://127.0.0.1:8080/"
    assert url_for("::1", 8080) == "http://[::1]:8080/"


def test_third_party_loggers_speak_only_from_vv() -> None:
    saved = {n: logging.getLogger(n).level for n in ("", *QUIET_LOGGERS)}
    try:
        configure_logging(1)
        assert logging.getLogger("sharpcam.webrtc.app").isEnabledFor(logging.INFO)
        assert not logging.getLogger("aioice.ice").isEnabledFor(logging.INFO)
        assert not logging.getLogger("aiohttp.access").isEnabledFor(logging.INFO)
        configure_logging(2)
        assert logging.getLogger("aioice.ice").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("aiortc.rtcpeerconnection").isEnabledFor(logging.DEBUG)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def start_server(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``python -m sharpcam.webrtc`` with ``args``; return it and its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sharpcam.webrtc",
        "--port",
        "0",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
    match = re.search(r"open (http://\S+) in Chrome or Firefox", line)
    if match is None:
        proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(f"no address in {line!r}; stderr: {err.decode()}")
    return proc, match.group(1)


async def interrupt(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.slow
def test_the_server_relays_and_closes_its_peers_on_ctrl_c(invert_model: Path) -> None:
    async def run() -> None:
        proc, url = await start_server("--model", str(invert_model), "-v")
        client = await connect(url, track=ColourTrack(), options={"split": 0})
        await wait_until(lambda: len(client.frames) >= 3, "frames from the server process")
        frame = client.frames[-1].to_ndarray(format="rgb24")
        assert abs(mean_rgb(frame, 0.1, 0.9) - INVERTED_COLOUR).max() < 25
        code, out, err = await interrupt(proc)
        assert code == 0, err
        assert "closed 1 peer connection(s)" in out
        # -v: the relay's peer events, none of aioice's per-check lines
        assert "sharpcam.webrtc.app: peer" in err and "connected" in err
        assert "aioice" not in err and "aiortc" not in err, err[:2000]
        await wait_until(lambda: client.pc.connectionState == "closed", "the client to see it")
        await client.close()

    asyncio.run(run())


@pytest.mark.slow
def test_the_server_sends_back_twice_the_size_with_a_x2_model(invert_x2_model: Path) -> None:
    async def run() -> None:
        proc, url = await start_server("--model", str(invert_x2_model), "--upscale", "2")
        client = await connect(url, track=ColourTrack(160, 120))
        await wait_until(lambda: len(client.frames) >= 3, "frames from the ×2 relay")
        frame = client.frames[-1].to_ndarray(format="rgb24")
        assert frame.shape == (240, 320, 3)
        # left of the divider: a plain upscale of what was sent; right: the ×2 model
        assert abs(mean_rgb(frame, 0.05, 0.4) - np.array(COLOUR)).max() < 25
        assert abs(mean_rgb(frame, 0.6, 0.95) - INVERTED_COLOUR).max() < 25
        await client.close()
        code, _, err = await interrupt(proc)
        assert code == 0, err

    asyncio.run(run())


@pytest.mark.slow
def test_the_server_streams_a_file_and_warns_off_loopback(invert_model: Path, tmp_path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=10)

    async def run() -> None:
        # -vv: every logger at debug level, aiohttp's and aiortc's included
        proc, url = await start_server(
            "--host", "0.0.0.0", "--model", str(invert_model), "--source", str(clip), "-vv"
        )
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        base, token = split_token(url)
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:  # the page, with the token in its address
                assert r.status == 200
            async with s.get(base + "config") as r:  # the API without it
                assert r.status == 403
        status, _, _ = await post_json(base + "offer", {"sdp": "v=0", "type": "offer"})
        assert status == 403
        client = await connect(url, recvonly=True, options={"split": 0})
        await wait_until(lambda: len(client.frames) >= 15, "frames past the clip's end")
        frame = client.frames[-1].to_ndarray(format="rgb24")
        assert abs(mean_rgb(frame, 0.1, 0.9) - INVERTED_COLOUR).max() < 25
        await client.close()
        code, out, err = await interrupt(proc)
        assert code == 0, err
        assert "warning: listening on 0.0.0.0, not loopback" in err
        assert "token" in err and "--source" in err
        # the token was printed once, in the address; no log line holds it
        assert "aioice" in err and "aiortc" in err  # -vv did log their debug lines
        assert token is not None and token not in err and token not in out

    asyncio.run(run())


def test_sharpcam_serve_dispatches_here(invert_model: Path, capsys) -> None:
    from sharpcam.cli import main as sharpcam_main

    assert sharpcam_main(["serve", "--max-peers", "0", "--model", str(invert_model)]) == 2
    assert "--max-peers must be at least 1" in capsys.readouterr().err


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_out_of_file_descriptors_is_one_line_and_the_server_recovers(invert_model) -> None:
    async def run() -> None:
        proc, url = await start_server("--model", str(invert_model))
        base, _ = split_token(url)
        # leave the server a handful of descriptors, then open far more connections
        spare = 6
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (open_fds(proc.pid) + spare, 4096))
        host, port = base.removeprefix("http://").rstrip("/").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(3 * spare)]
        await asyncio.sleep(2.5)  # asyncio retries accept() each second: several refusals
        for _, writer in held:
            writer.close()
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (4096, 4096))

        async def config_ok() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(base + "config") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        deadline = asyncio.get_running_loop().time() + 20
        while not await config_ok():  # answers again once descriptors are free
            assert asyncio.get_running_loop().time() < deadline, "the server never recovered"
            await asyncio.sleep(0.2)
        code, _, err = await interrupt(proc)
        assert code == 0, err
        lines = err.splitlines()
        assert "Traceback" not in err, err[:3000]
        assert sum("out of file descriptors" in line for line in lines) == 1, err[:3000]
        assert len(lines) <= 2, err[:3000]

    asyncio.run(run())
