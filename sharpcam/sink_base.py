"""The contract every sink keeps (pyvirtualcam's pattern): an abstract :class:`Sink`,
checked frames, and the resize a sink applies when a camera changes mode mid-stream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

import av
import cv2
import numpy as np

from sharpcam.frames import check_frame
from sharpcam.sources import Frame


class Sink(ABC):
    """Receives sharpened frames. :meth:`close` exactly once (the context manager does)."""

    #: A label for logs.
    name: str = "sink"

    @abstractmethod
    def send(self, frame: Frame, original: Frame | None = None) -> None:
        """Deliver one sharpened frame.

        Args:
            frame: the sharpened frame (``HxWx3 uint8`` RGB image, source timestamps).
            original: the frame before sharpening (the preview shows both).

        Raises:
            TypeError: the image is not uint8. ValueError: it is not ``HxWx3``.
            SinkError: the output cannot be written.
        """

    def passthrough(self, packet: av.Packet) -> None:  # noqa: B027 - optional hook
        """Copy a non-video packet (audio) through untouched; ignored by default."""

    @property
    def stop_requested(self) -> bool:
        """The user asked this sink to end the run (closed the preview window)."""
        return False

    @abstractmethod
    def close(self, *, complete: bool = True) -> None:
        """Finish the output; ``complete=False`` discards what a file sink wrote."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(complete=exc_type is None)


def checked_image(frame: Frame) -> np.ndarray:
    return check_frame(frame.image)


def fit_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to ``width x height`` if it is not already (a camera changed mode)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
