"""``python -m sharpcam.webrtc``: the same as ``sharpcam serve``."""

import sys

from sharpcam.webrtc.command import main

sys.exit(main())
