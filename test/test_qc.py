"""The QC report: orientation letters, body mask, the PNG and the HTML page."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import rotation
from itk_samconvex.apps import qc, qc_draw
from itk_samconvex.apps.qc import (
    PLANES,
    QCData,
    axis_letters,
    body_mask,
    compose_figure,
    render_html,
    write_report,
)

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


def test_rendering_does_not_load_matplotlib(tmp_path):
    # the QC picture is drawn with numpy and Pillow: importing matplotlib alone costs a
    # one-shot register about 0.6 s (docs/process_time.md)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from test_qc import _data; "
        "from itk_samconvex.apps.qc import write_report; "
        "write_report(_data((12, 14, 16)), __import__('pathlib').Path(sys.argv[2])); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path / "qc.png")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "qc.png").read_bytes()[:8] == PNG_SIGNATURE


def _pixels(figure, row, plane, inset=0):
    """A panel's RGB pixels; ``inset`` leaves out a border band (the orientation letters)."""
    left, top, right, bottom = figure.panels[(row, plane)]
    box = np.asarray(figure.image)[top:bottom, left:right].astype(int)
    return box[inset : box.shape[0] - inset, inset : box.shape[1] - inset]


def test_difference_rows_tell_a_good_registration_from_a_bad_one():
    # before: the ball shifted by 2 voxels (bright crescents); after: identical to fixed
    figure = compose_figure(_data())
    for plane in PLANES:
        bright_before = (_pixels(figure, 2, plane, 16).max(axis=-1) > 128).sum()
        bright_after = (_pixels(figure, 3, plane, 16).max(axis=-1) > 128).sum()
        assert bright_before > 50, plane
        assert bright_after == 0, plane
    # a bad registration (after = before) looks as bad as before
    bad = compose_figure(_data(after=_data().before))
    for plane in PLANES:
        assert (_pixels(bad, 3, plane) == _pixels(bad, 2, plane)).all(), plane


def test_folds_are_yellow_and_only_where_the_determinant_is_not_positive():
    yellow = np.array([255, 255, 0])
    figure = compose_figure(_data())
    axial = _pixels(figure, 4, "axial")  # the slice through the folded block
    assert (axial == yellow).all(axis=-1).sum() > 20
    smooth = _data()
    smooth.jacobian[smooth.jacobian <= 0] = 1.0
    clean = compose_figure(smooth)
    for plane in PLANES:
        assert not (_pixels(clean, 4, plane) == yellow).all(axis=-1).any(), plane


def test_label_contours_are_drawn_in_the_fusion_rows():
    figure = compose_figure(_data())
    colour = np.round(np.array(qc_draw.LABEL_COLOURS[0]) * 255).astype(int)
    for row in (0, 1):
        pixels = _pixels(figure, row, "axial")
        assert (pixels == colour).all(axis=-1).sum() > 20, row
    unlabelled = compose_figure(_data(fixed_labels=None, before_labels=None, after_labels=None))
    assert not (_pixels(unlabelled, 0, "axial") == colour).all(axis=-1).any()


def test_panels_keep_the_physical_aspect_ratio():
    # spacing (1.5, 1.0, 2.5) mm: an axial panel of the 24 x 28 crop is 24*1.0 mm tall and
    # 28*1.5 mm wide; a coronal one 20*2.5 mm tall and 28*1.5 mm wide
    figure = compose_figure(_data())
    for plane, ratio in (("axial", 24 * 1.0 / (28 * 1.5)), ("coronal", 20 * 2.5 / (28 * 1.5))):
        left, top, right, bottom = figure.panels[(0, plane)]
        assert (bottom - top) / (right - left) == pytest.approx(ratio, rel=0.02), plane


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


def test_long_header_lines_are_cut_to_leave_the_dice_table_free():
    assert qc_draw.fit("short", 12, 100) == "short"
    cut = qc_draw.fit("chosen from the images: " + "x" * 300, 12, 200)
    assert cut.endswith("...") and cut.startswith("chosen from")
    assert qc_draw.text_width(cut, 12) <= 200 < qc_draw.text_width(cut[:-3] + "x...", 12)
    # the header's text stops before the table's name column: a white gap between them
    figure = compose_figure(_data(header=["y" * 400]))
    pixels = np.asarray(figure.image)[20:40]
    gap = pixels[:, qc.FIGURE_WIDTH - 124 - 140 - 8 : qc.FIGURE_WIDTH - 124 - 140 + 4]
    assert (gap == 255).all()
