"""``sharpcam serve``: the WebRTC relay demo, one module per job.

* :mod:`sharpcam.webrtc.command`: the command (options, start-up, messages);
* :mod:`sharpcam.webrtc.server`: serving (the bounded site, the run loop, a background
  server for tests and notebooks);
* :mod:`sharpcam.webrtc.app`: the web side (endpoints, peer connections, signalling);
* :mod:`sharpcam.webrtc.access`: who may use it (Host, Origin, content type, token);
* :mod:`sharpcam.webrtc.limits`: bounds on HTTP connections (count, head deadline, fds);
* :mod:`sharpcam.webrtc.track`: the frame work (newest frame wins, split view, figures);
* :mod:`sharpcam.webrtc.source`: the local source of receive-only mode (webcam or file).

Imports flow one way: ``command`` → ``server`` → ``app`` → ``access``, ``limits``,
``source`` → ``track``.

>>> main(["--port", "8080", "--model", "models/sharpcam.onnx"])  # doctest: +SKIP
"""

from __future__ import annotations

from sharpcam.webrtc.access import AccessPolicy
from sharpcam.webrtc.app import Relay, RelaySettings, create_app
from sharpcam.webrtc.command import ServeSettings, build_parser, main
from sharpcam.webrtc.limits import HttpLimits
from sharpcam.webrtc.server import BackgroundServer, ServeError, serve, start_site, url_for

__all__ = [
    "AccessPolicy",
    "BackgroundServer",
    "HttpLimits",
    "Relay",
    "RelaySettings",
    "ServeError",
    "ServeSettings",
    "build_parser",
    "create_app",
    "main",
    "serve",
    "start_site",
    "url_for",
]
