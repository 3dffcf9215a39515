"""Backends that run a sharpcam ONNX model: :mod:`.onnxruntime` (CPU, CUDA, TensorRT) and
:mod:`.openvino` (CPU, bf16/int8 where the CPU has them).

Each backend object has ``name``, ``provider``, ``device`` (``"cpu"``/``"gpu"``),
``precision``, ``io``, ``metadata`` and ``plan(height, width, scale)``, which returns
reused buffers for one frame size with ``load(frame, bgr=)``, ``execute()`` and
``unload(out, bgr=)``; :class:`sharpcam.engine.Engine` drives them.
"""

BACKENDS = ("onnxruntime", "openvino")
BACKEND_CHOICES = ("auto", *BACKENDS)
