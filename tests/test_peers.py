"""Peer super-resolution models from ../shared/peers (skipped when it is absent)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import read_rgb
from training.peers import DEFAULT_PEERS, load_peers

PHOTO = DEFAULT_PEERS.parent / "data" / "photos" / "kodak_kodim05.jpg"


def test_an_absent_folder_skips_every_peer_with_a_reason(tmp_path: Path) -> None:
    peers, skipped = load_peers(tmp_path)
    assert peers == [] and len(skipped) == 3
    assert all("not found" in why for _, why in skipped)


@pytest.mark.skipif(not PHOTO.is_file() or not DEFAULT_PEERS.is_dir(), reason="../shared absent")
def test_every_peer_upscales_x2_better_than_bicubic() -> None:
    peers, skipped = load_peers()
    assert skipped == [] and len(peers) == 3
    hr = read_rgb(PHOTO)[:128, :192]
    lr = cv2.resize(hr, (96, 64), interpolation=cv2.INTER_AREA)
    bicubic = cv2.PSNR(cv2.resize(lr, (192, 128), interpolation=cv2.INTER_CUBIC), hr)
    for peer in peers:
        out = peer.fn(lr)
        assert out.shape == hr.shape and out.dtype == np.uint8
        assert cv2.PSNR(out, hr) > bicubic + 0.2, peer.name
