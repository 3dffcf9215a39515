"""``python -m sharpcam.webrtc``: the same as ``sharpcam serve``."""

import sys

from sharpcam.webrtc.server import main

sys.exit(main())
