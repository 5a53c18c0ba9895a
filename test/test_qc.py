"""The QC report: orientation letters, body mask, the PNG and the HTML page."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from helpers import rotation
from itk_samconvex.apps.qc import QCData, axis_letters, body_mask, render_html, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _data(shape=(20, 24, 28), **changes) -> QCData:
    """A ball of soft tissue with an air-filled core (a 'lung') in air; moving = shifted."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    centre = np.array(shape, dtype=np.float32) / 2
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    fixed = np.where(r < 8, 40.0, -1000.0).astype(np.float32)
    fixed[r < 3] = -850.0
    before = np.roll(fixed, 2, axis=2)
    labels = (r < 5).astype(np.uint8) * 2
    jacobian = (1.0 + 0.3 * np.sin(x / 4.0) * np.cos(y / 5.0)).astype(np.float32)
    jacobian[8:11, 10:13, 12:15] = -0.4
    inside = np.ones(shape, dtype=bool)
    inside[:, :, :2] = False
    values = dict(
        fixed=fixed,
        before=before,
        after=fixed.copy(),
        before_inside=inside,
        after_inside=inside,
        jacobian=jacobian,
        spacing=(1.5, 1.0, 2.5),
        origin=(-20.0, 5.0, 100.0),
        direction=np.eye(3),
        fixed_labels=labels,
        before_labels=np.roll(labels, 2, axis=2),
        after_labels=labels,
        label_names={2: "Brainstem"},
        dice={2: (0.61, 0.97)},
        header=["pair: a <- b", "pre-alignment: affine"],
        title="synthetic",
    )
    values.update(changes)
    return QCData(**values)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_axis_letters_follow_the_direction_matrix():
    assert axis_letters(np.eye(3)) == [("R", "L"), ("A", "P"), ("I", "S")]
    flipped = np.diag([-1.0, -1.0, 1.0])  # RAS-aligned index axes
    assert axis_letters(flipped) == [("L", "R"), ("P", "A"), ("I", "S")]
    oblique = rotation((0.0, 0.0, 1.0), 30.0)  # 30 deg about z: x stays mostly L
    assert axis_letters(oblique)[0] == ("R", "L")
    swapped = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert axis_letters(swapped) == [("A", "P"), ("I", "S"), ("R", "L")]


def test_body_mask_includes_the_air_inside_the_body():
    data = _data()
    body = body_mask(data.fixed)
    centre = tuple(n // 2 for n in data.fixed.shape)
    assert data.fixed[centre] == -850.0 and body[centre]
    assert not body[0, 0, 0]


def test_report_png_and_html_atomically(tmp_path):
    png, page = tmp_path / "qc.png", tmp_path / "qc.html"
    written = write_report(_data(), png, page)
    assert written == [png, page]
    width, height = _png_size(png.read_bytes())
    assert width >= 800 and height >= 1200
    text = page.read_text(encoding="utf-8")
    assert "Brainstem" in text and "0.610" in text and "0.970" in text and "+0.360" in text
    assert "<img src='qc.png'" in text and "pre-alignment: affine" in text
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        write_report(_data(), png, page)
    write_report(_data(), png, page, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qc.html", "qc.png"]


def test_render_html_escapes_names():
    text = render_html(_data(label_names={2: "<b>x</b>"}), "qc.png")
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text


def test_does_not_touch_pyplot(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    write_report(_data((12, 14, 16)), tmp_path / "qc.png")
    assert plt.get_fignums() == before


def test_rejects_arrays_of_another_shape():
    data = _data()
    with pytest.raises(ValueError, match=r"QCData.after has shape \(19, 24, 28\)"):
        _data(after=data.after[:-1])


def test_body_mask_keeps_lungs_cut_by_the_field_of_view():
    """A lung crop: parenchyma (-850 HU) touches the image border, ambient air (-1000) too."""
    image = np.full((10, 20, 20), 40.0, np.float32)
    image[:, :, :8] = -850.0  # lung reaching the left edge
    image[:, :2, 10:] = -1000.0  # a strip of ambient air at the anterior edge
    body = body_mask(image)
    assert body[:, :, :8].all()
    assert not body[:, :2, 10:].any()
