"""The demo page in a real headless Chromium against a real relay.

Chromium's fake camera plays a y4m clip written here; the server runs a real ONNX Runtime
engine with a colour-negative model, so the page can prove from pixels (read back through
a canvas) that the right half of what it shows is the model's output and the left half the
original, and that the toggle and divider change that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.register_assert_rewrite("conftest_browser", "browser")

from browser import COUNT_FRAMES_JS, SAMPLE_JS, chromium, figures, wait_for, write_y4m  # noqa: E402
from conftest_browser import COLOUR, make_relay, write_clip  # noqa: E402

from sharpcam.webrtc import BackgroundServer  # noqa: E402
from sharpcam.webrtc.access import AccessPolicy, new_token  # noqa: E402
from sharpcam.webrtc.source import open_source_track  # noqa: E402

pytest_plugins = ["conftest_browser"]  # fixtures: invert_engine, invert_x2_engine

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOLERANCE = 30  # camera y4m → VP8 → server → VP8 → canvas: two lossy passes, 4 conversions
LEFT, RIGHT = [0.05, 0.4, 0.1, 0.6], [0.6, 0.95, 0.1, 0.6]  # x0, x1, y0, y1 (flat area)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    clip = write_y4m(tmp_path_factory.mktemp("camera") / "camera.y4m", colour=COLOUR)
    with chromium(clip) as b:
        yield b


def close_to(rgb: list[float] | None, want: np.ndarray) -> bool:
    return rgb is not None and bool(np.abs(np.asarray(rgb) - want).max() < TOLERANCE)


def regions_become(page: Any, left: np.ndarray, right: np.ndarray, what: str) -> None:
    """Wait until the remote video's left and right regions show ``left`` and ``right``."""

    def check() -> bool:
        sample = page.evaluate(SAMPLE_JS, [LEFT, RIGHT])
        return sample is not None and close_to(sample[0], left) and close_to(sample[1], right)

    for _ in range(300):  # a guard against hangs (30 s), not a speed claim
        if check():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"{what}: regions are {page.evaluate(SAMPLE_JS, [LEFT, RIGHT])}")


def open_page(context: Any, url: str) -> tuple[Any, list[str]]:
    """A new page at ``url`` and the list its script errors and console errors go to."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(url)
    return page, errors


def wait_peers_gone(server: BackgroundServer, page: Any) -> None:
    for _ in range(300):
        if not server.call(lambda: len(server.relay.peers)):
            return
        page.wait_for_timeout(100)
    raise AssertionError("the server kept the peer")


def wait_connected_with_frames(page: Any, frames: int = 10) -> None:
    wait_for(
        page,
        "() => document.getElementById('status').textContent === 'connected'",
        what="the page to connect",
    )
    page.evaluate(COUNT_FRAMES_JS)
    wait_for(page, f"() => window.remoteFrames > {frames}", what=f"{frames} remote frames")


#: Labels and figures (but the model's name) of the figures panel on more than one line,
#: with a model name as long as a real one can be (the next stats message restores it).
ONE_LINE_JS = """() => {
  document.getElementById('fig-model').textContent =
    'sharpcam_student_x2.onnx on tensorrt, tier balanced';
  const lines = (e) => {
    const range = document.createRange();
    range.selectNodeContents(e);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
  };
  return [...document.querySelectorAll('#figures dt, #figures dd:not(#fig-model)')]
    .filter((e) => lines(e) > 1)
    .map((e) => e.textContent);
}"""


def number(text: str) -> float:
    return float(text)  # raises on "–": the figure was not filled in


def test_the_page_relays_the_camera_sharpened_with_divider_toggle_and_figures(
    browser: Any, invert_engine: Any
) -> None:
    original = np.array(COLOUR, float)
    inverted = 255 - original
    relay = make_relay(invert_engine, stats_interval_s=0.5)
    with BackgroundServer(relay) as server:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        page, errors = open_page(context, server.url)
        wait_connected_with_frames(page)
        assert page.text_content("#mode") == "relay: your camera"

        # the split view: original | sharpened (the model's colour negative)
        regions_become(page, original, inverted, "split view at 0.5")

        # figures: from getStats and from the server, and they update
        first = wait_for(
            page,
            "() => { const t = (id) => document.getElementById(id).textContent;"
            " return t('fig-server-fps') !== '–' && t('fig-fps') !== '–' && t('fig-rtt') !== '–'"
            " && t('fig-model-ms') !== '–' ? t('fig-frames') : null; }",
            what="figures filled in",
        )
        wait_for(
            page,
            "(n) => Number(document.getElementById('fig-frames').textContent) > Number(n)",
            first,
            what="frames received to go up",
        )
        shown = figures(page)
        assert number(shown["fig-fps"]) > 0 and number(shown["fig-server-fps"]) > 0
        assert number(shown["fig-model-ms"]) > 0 and number(shown["fig-rtt"]) >= 0
        assert number(shown["fig-dropped"]) >= 0 and number(shown["fig-errors"]) == 0
        assert shown["fig-size"] == "640×480" and shown["fig-codec"] in ("VP8", "H264")
        assert shown["fig-model"] == "invert test model"

        # the toggle switches sharpening off and on
        page.uncheck("#sharpen")
        regions_become(page, original, original, "sharpening off")
        page.check("#sharpen")
        regions_become(page, original, inverted, "sharpening back on")

        # drag the divider to the left edge: everything sharpened
        box = page.locator("#stage").bounding_box()
        mid_y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] / 2, mid_y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.3, mid_y, steps=5)
        page.mouse.move(box["x"] + 1, mid_y, steps=5)
        page.mouse.up()
        regions_become(page, inverted, inverted, "divider dragged to the left")
        assert page.get_attribute("#divider", "aria-valuenow") == "0"

        # every label and figure on one line ("model ms p95" used to wrap beside a long
        # model name), wide or narrow
        for width in (1100, 700, 420):
            page.set_viewport_size({"width": width, "height": 800})
            assert page.evaluate(ONE_LINE_JS) == [], f"wrapped at {width} px"
        page.set_viewport_size({"width": 1100, "height": 800})
        wait_for(
            page,
            "() => document.getElementById('fig-model').textContent === 'invert test model'",
            what="the server's stats to restore the model name",
        )

        # Stop closes the connection; the server frees the peer
        running = page.locator("#stage").bounding_box()
        page.click("#stop")
        assert page.text_content("#status") == "stopped"
        wait_peers_gone(server, page)
        # the video area keeps its size and says why it is empty; the figures are cleared
        stopped = page.locator("#stage").bounding_box()
        assert abs(stopped["width"] - running["width"]) <= 1
        assert abs(stopped["height"] - running["height"]) <= 1
        assert running["height"] > 200
        assert page.is_visible("#placeholder") and "Start" in page.text_content("#placeholder")
        page.wait_for_timeout(1500)  # a stats tick or server message after Stop must not refill
        cleared = figures(page)
        assert cleared.pop("fig-model") == "invert test model"
        assert set(cleared.values()) == {"–"}, cleared
        assert errors == []
        context.close()


def test_receive_only_mode_shows_the_servers_source_with_the_token(
    browser: Any, invert_engine: Any, tmp_path: Path
) -> None:
    colour = (30, 160, 90)  # not the camera's colour: this must come from the server
    original = np.array(colour, float)
    source = open_source_track(str(write_clip(tmp_path / "clip.mp4", frames=20, colour=colour)))
    access = AccessPolicy(token=new_token())  # as `sharpcam serve --source` runs
    try:
        relay = make_relay(invert_engine, source=source)
        with BackgroundServer(relay, access=access) as server:
            assert server.url.endswith(f"/?token={access.token}")
            context = browser.new_context()
            # without the token the page says what is missing, and no peer is made
            bare, _ = open_page(context, server.url.split("?")[0])
            message = wait_for(
                bare,
                "() => { const s = document.getElementById('status');"
                " return s.classList.contains('error') ? s.textContent : null; }",
                what="the refusal without the token",
            )
            assert "403" in message and "token" in message and access.token not in message
            assert not server.call(lambda: len(relay.peers))
            bare.close()
            # the printed address (with the token) works; Host and Origin are the page's own
            page, errors = open_page(context, server.url)
            wait_connected_with_frames(page)
            assert page.text_content("#mode") == "receive-only: the server's source"
            regions_become(page, original, 255 - original, "the source, split")
            assert errors == []
            context.close()
    finally:
        source.close()


def test_the_page_shows_the_tier_beside_the_model(browser: Any, invert_engine: Any) -> None:
    """``/config``'s tier follows the model's name; a step-down note is its tooltip."""
    from sharpcam.runtime import TieredEngine

    engine = TieredEngine([invert_engine])  # the invert model has no tier: quality
    engine.status_note = "tier quality (stepped down from a test)"
    with BackgroundServer(make_relay(engine)) as server:
        context = browser.new_context()
        page, errors = open_page(context, server.url.split("?")[0] + "?autostart=0")
        wait_for(
            page,
            "() => document.getElementById('fig-model').textContent"
            " === 'invert test model, tier quality'",
            what="the tier beside the model",
        )
        assert page.get_attribute("#fig-model", "title") == engine.status_note
        assert errors == []
        context.close()


def test_a_full_relay_is_reported_on_the_page_and_a_freed_slot_reused(
    browser: Any, invert_engine: Any
) -> None:
    relay = make_relay(invert_engine, max_peers=1)
    with BackgroundServer(relay) as server:
        context = browser.new_context()
        first, _ = open_page(context, server.url)
        wait_connected_with_frames(first, frames=2)
        second, _ = open_page(context, server.url)
        message = wait_for(
            second,
            "() => { const s = document.getElementById('status');"
            " return s.classList.contains('error') ? s.textContent : null; }",
            what="the refusal on the second page",
        )
        assert "HTTP 503" in message and "max-peers" in message
        assert second.is_enabled("#start")
        first.close(run_before_unload=True)  # pagehide closes its peer connection
        wait_peers_gone(server, second)
        second.click("#start")
        wait_connected_with_frames(second, frames=2)
        context.close()


def server_sizes(server: BackgroundServer) -> tuple[int, int, int, int] | None:
    """The peer's last frame sizes on the server: width and height in, and out."""

    def read() -> tuple[int, int, int, int] | None:
        peers = list(server.relay.peers)
        if not peers or peers[0].track is None:
            return None
        s = peers[0].track.stats()
        return (s.width_in, s.height_in, s.width_out, s.height_out)

    return server.call(read)  # type: ignore[return-value]


def wait_server_sizes(server: BackgroundServer, page: Any, want: Any, what: str) -> tuple:
    for _ in range(300):  # a guard against hangs (30 s), not a speed claim
        sizes = server_sizes(server)
        if sizes is not None and want(sizes):
            return sizes
        page.wait_for_timeout(100)
    raise AssertionError(f"{what}: server sizes are {server_sizes(server)}")


def test_a_x2_relay_gets_a_reduced_stream_and_sends_it_back_twice_as_large(
    browser: Any, invert_x2_engine: Any
) -> None:
    original = np.array(COLOUR, float)
    relay = make_relay(invert_x2_engine, stats_interval_s=0.5)
    with BackgroundServer(relay) as server:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        page, errors = open_page(context, server.url)
        wait_connected_with_frames(page)
        assert page.text_content("#mode") == "relay: your camera (×2 model)"
        assert page.text_content("#label-left") == "plain ×2 upscale"
        assert page.text_content("#label-right") == "sharpcam ×2"
        # a ×2 model: the page sends half its camera's size (640x480 -> 320x240, or less
        # if the browser's own adaptation lowers it further) with a capped bitrate...
        assert page.input_value("#send") == "half"
        w_in, h_in, w_out, h_out = wait_server_sizes(
            server, page, lambda s: 0 < s[0] <= 320, "half size sent"
        )
        assert (w_out, h_out) == (2 * w_in, 2 * h_in)
        parameters = page.evaluate(SENDER_ENCODING_JS)
        assert parameters["scaleResolutionDownBy"] == 2
        assert parameters["maxBitrate"] == 500_000
        # ...and gets back twice that: plain upscale | the model's ×2 (its colour negative)
        regions_become(page, original, 255 - original, "plain upscale | sharpcam ×2")
        wait_for(
            page,
            "() => document.getElementById('fig-server-size').textContent.includes('→')",
            what="the sizes figure",
        )
        shown = figures(page)["fig-server-size"]
        assert shown == f"{w_in}×{h_in} → {w_out}×{h_out}", shown

        # live: a quarter at 150 kbit/s, then the full camera, without renegotiating
        page.select_option("#send", "quarter")
        wait_server_sizes(server, page, lambda s: 0 < s[0] <= 160, "quarter size sent")
        assert page.evaluate(SENDER_ENCODING_JS)["maxBitrate"] == 150_000
        page.select_option("#send", "full")
        wait_server_sizes(server, page, lambda s: s[0] > 320, "full size sent")
        assert "maxBitrate" not in page.evaluate(SENDER_ENCODING_JS)
        regions_become(page, original, 255 - original, "full size, ×2")
        assert errors == []
        context.close()


#: The page's video sender's first encoding (``RTCRtpSender.getParameters``).
SENDER_ENCODING_JS = """() => {
  const sender = state.pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  const e = sender.getParameters().encodings[0];
  const out = { scaleResolutionDownBy: e.scaleResolutionDownBy };
  if (e.maxBitrate !== undefined) out.maxBitrate = e.maxBitrate;
  return out;
}"""
