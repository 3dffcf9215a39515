"""The one place where frames change layout, colour order or dtype.

The runtime's common currency is an ``HxWx3 uint8 RGB`` array (C-contiguous). Around it:

* cameras give BGR (OpenCV) and the preview wants BGR: :func:`rgb_from_bgr`,
  :func:`bgr_from_rgb`;
* video files and WebRTC hold YUV: :func:`rgb_from_video_frame`, :func:`video_frame_from_rgb`
  (FFmpeg's swscale through PyAV, honouring the stream's colour matrix and range, with
  :data:`SWS_FLAGS`: swscale's default path is biased, see there);
* the model wants ``[1,3,H',W'] float32 RGB in [0,1]`` with ``H'``, ``W'`` multiples of 8:
  :class:`PlanarBuffers` converts both ways without allocating per frame (it holds the
  padded input and output tensors for one frame size and is re-made only when the size
  changes). OpenCV's SIMD kernels do the heavy passes; doing the conversion inside the
  ONNX graph instead (a uint8 NHWC wrapper) measured slower on CPU (``sharpcam bench
  --io-compare``).

Padding is *reflect* (``dcb|abcd|cba``, OpenCV's ``BORDER_REFLECT_101``): the border a
convolution sees looks like image content, so the crop that comes back has no seam.
"""

from __future__ import annotations

from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from sharpcam.contract import MULTIPLE

_INV255 = np.float32(1.0 / 255.0)

#: swscale flags for every YUV <-> RGB conversion. swscale's default (PyAV's plain
#: ``to_ndarray(format="rgb24")``) truncates instead of rounding and repeats chroma samples:
#: a decoded 4:2:0 frame came out 0.7-1.4 grey levels darker per channel than its colour
#: matrix says (mean absolute error about 1 level), so every decode, and every RGB -> YUV ->
#: RGB trip of the codec benchmark, darkened the picture. Accurate rounding with full
#: chroma interpolation is unbiased (mean within 0.02 levels, mean absolute error 0.25, the
#: 8-bit rounding); it costs about 3 ms more per 720p frame on one core.
SWS_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
#: Colour tags of a stream (FFmpeg's ``AVColorSpace`` / ``AVColorRange`` numbers) that the
#: RGB -> YUV conversion must follow, not only write into the stream.
BT709 = 1
FULL_RANGE = 2


def check_frame(frame: object) -> np.ndarray:
    """Return ``frame`` if it is an ``HxWx3 uint8`` array, else raise.

    Raises:
        TypeError: not a numpy array, or not uint8.
        ValueError: not ``HxWx3``, or empty.
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise TypeError(f"frame dtype must be uint8, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame shape must be (H, W, 3), got {frame.shape}")
    return frame


def rgb_from_bgr(frame: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` BGR (OpenCV's order) to a new RGB array; also works RGB to BGR."""
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


bgr_from_rgb = rgb_from_bgr


def rgb_from_video_frame(frame: av.VideoFrame) -> np.ndarray:
    """A decoded video frame (any pixel format) as a new C-contiguous ``HxWx3 uint8`` RGB
    array; the frame's own colour matrix and range are used, with :data:`SWS_FLAGS`.

    swscale may pad each converted row for its SIMD width (on an AVX2-only CPU a 96-pixel
    row came back as a strided view); the copy happens only then.
    """
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24", interpolation=SWS_FLAGS))


def colour_options(colorspace: int, color_range: int) -> dict[str, Any]:
    """``reformat`` options that convert RGB with the matrix and range of a stream tagged
    ``colorspace`` / ``color_range`` (FFmpeg's numbers; untagged means BT.601, limited)."""
    options: dict[str, Any] = {}
    if colorspace == BT709:
        options["dst_colorspace"] = Colorspace.ITU709
    if color_range == FULL_RANGE:
        options["dst_color_range"] = ColorRange.JPEG
    return options


def video_frame_from_rgb(image: np.ndarray, pix_fmt: str, **colour: Any) -> av.VideoFrame:
    """An ``HxWx3 uint8`` RGB array as a video frame in ``pix_fmt`` (e.g. ``yuv420p``),
    converted with :data:`SWS_FLAGS`.

    ``colour`` goes to PyAV's ``reformat`` (:func:`colour_options`) so the matrix matches
    the output stream's tags.
    """
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    return frame.reformat(format=pix_fmt, interpolation=SWS_FLAGS, **colour)


def padded_size(height: int, width: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    """The smallest ``(H', W')`` ≥ ``(height, width)`` that are multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def _reflect_fill(buf: np.ndarray, height: int, width: int) -> None:
    """Fill ``buf[..., height:, :]`` and ``buf[..., :, width:]`` by reflecting the content
    in ``buf[..., :height, :width]`` (edge not repeated); works in place on any dtype."""
    full_h, full_w = buf.shape[-2:]
    for i in range(height, full_h):  # rows below the image
        src = _reflect_index(i, height)
        buf[..., i, :width] = buf[..., src, :width]
    for j in range(width, full_w):  # columns right of it, padded rows included
        src = _reflect_index(j, width)
        buf[..., :, j] = buf[..., :, src]


def _reflect_index(i: int, n: int) -> int:
    """Index in ``[0, n)`` that reflect padding maps position ``i`` to (any ``i``, ``n`` ≥ 1)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return i if i < n else period - i


class PlanarBuffers:
    """Reusable model-side tensors for frames of one size.

    Args:
        height, width: frame size (any, ≥ 1).
        multiple: the model's size multiple (8 in the contract).
        scale: the model's output size over its input size (1, or 2 for ×2 models).

    Attributes:
        input: ``[1,3,H',W'] float32``, filled by :meth:`load`.
        output: ``[1,3,sH',sW'] float32``, where the model's result is written.
    """

    def __init__(self, height: int, width: int, multiple: int = MULTIPLE, scale: int = 1) -> None:
        self.height, self.width = height, width
        self.scale = scale
        self.padded = padded_size(height, width, multiple)
        ph, pw = self.padded
        self.input = np.zeros((1, 3, ph, pw), np.float32)
        self.output = np.zeros((1, 3, ph * scale, pw * scale), np.float32)
        self._planes = [np.empty((height, width), np.uint8) for _ in range(3)]
        self._out_planes = (
            self._planes
            if scale == 1
            else [np.empty((height * scale, width * scale), np.uint8) for _ in range(3)]
        )

    def load(self, frame: np.ndarray, *, bgr: bool = False) -> np.ndarray:
        """Write ``frame`` (``HxWx3 uint8``, RGB or BGR) into :attr:`input` as RGB in
        ``[0,1]``, reflect-padded to the multiple; return :attr:`input`.

        Raises:
            ValueError: ``frame`` is not this buffer's size.
        """
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {frame.shape[:2]}, buffers are for {self.size}")
        planes = cv2.split(frame, self._planes)
        order = (2, 1, 0) if bgr else (0, 1, 2)
        for c, p in enumerate(order):
            np.multiply(planes[p], _INV255, out=self.input[0, c, : self.height, : self.width])
        if self.padded != (self.height, self.width):
            _reflect_fill(self.input[0], self.height, self.width)
        return self.input

    def unload(self, out: np.ndarray | None = None, *, bgr: bool = False) -> np.ndarray:
        """:attr:`output` cropped back to ``scale`` times the frame size, as ``uint8`` (rounded,
        saturated to [0,255]; values below 0 become 0), RGB unless ``bgr``.

        ``out``, if given, must be a C-contiguous ``HxWx3 uint8`` array; it is filled and
        returned. Otherwise a new array is returned (the caller may keep it).
        """
        s = self.scale
        res = self.output[0, :, : self.height * s, : self.width * s]
        out_w = self.padded[1] * s
        # Zero negatives in place first: convertScaleAbs takes |x| (cheap SIMD, then saturates).
        cv2.threshold(
            self.output[0].reshape(-1, out_w),
            0.0,
            0.0,
            cv2.THRESH_TOZERO,
            dst=self.output[0].reshape(-1, out_w),
        )
        for c in range(3):
            cv2.convertScaleAbs(res[c], self._out_planes[c], alpha=255.0)
        planes = self._out_planes[::-1] if bgr else self._out_planes
        if out is None:
            return cv2.merge(planes)
        return cv2.merge(planes, out)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames these buffers are for."""
        return self.height, self.width
