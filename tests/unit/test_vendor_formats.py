"""Real Nikon ND2 and Leica LIF files through shared.domain.imaging.reading.read_picture, as `nucleus segment` (a path) and an
upload (bytes) use it: channel names from the metadata, shape, dtype, the file's pixel size, the nuclear channel
by name and by index, and the refusal that lists the channels when none is chosen.

The sample files come from public repositories (tests/data/vendor/README.md says which); they are not kept in
this repository, so each test is skipped where its file is absent. NUCLEUS_VENDOR_SAMPLES names another folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shared.domain.imaging.errors import ImageError
from shared.domain.imaging.read_options import OptionError, ReadOptions
from shared.domain.imaging.reading import probe, read_picture

SAMPLES = Path(os.environ.get("NUCLEUS_VENDOR_SAMPLES") or Path(__file__).resolve().parents[1] / "data" / "vendor")
ND2_NAMES = ["5-FAM/pH 9.0", "FM 4-64/2% CHAPS"]


def sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.is_file():
        pytest.skip(f"{name} not in {SAMPLES} (see tests/data/vendor/README.md)")
    return path


@pytest.fixture(params=["path", "bytes"])
def as_source(request):
    """The command line reads a path, an upload reads bytes; both must give the same picture."""
    return (lambda path: path) if request.param == "path" else (lambda path: path.read_bytes())


# --- Nikon ND2: pims_nd2's cluster.nd2, T=3 Z=10 C=2 31x38 uint16 -------------------------------------------------

def test_nd2_metadata_shape_dtype_and_pixel_size(as_source):
    import nd2

    path = sample("cluster.nd2")
    expected = nd2.imread(str(path))  # T Z C Y X
    picture = read_picture(as_source(path), ReadOptions(channel="FM 4-64/2% CHAPS"))
    assert picture.format == "nd2"
    assert picture.channel_names == ND2_NAMES and picture.channel == 1
    assert picture.sizes == {"T": 3, "C": 2, "Z": 10, "Y": 31, "X": 38}
    assert picture.nuclear.shape == (31, 38) and picture.nuclear.dtype == np.uint16
    assert picture.channels.shape == (31, 38, 2)
    assert picture.pixel_size_um == pytest.approx(0.1678, abs=1e-4) and picture.pixel_size_from == "file"
    assert np.array_equal(picture.nuclear, expected[0, :, 1].max(axis=0))  # Z max projection of T 0
    assert np.array_equal(picture.channels[..., 0], expected[0, :, 0].max(axis=0))
    assert picture.record() == {"channel_name": "FM 4-64/2% CHAPS", "z": "max", "t": "0"}


def test_nd2_channel_by_name_or_index_and_a_chosen_plane(as_source):
    import nd2

    path = sample("cluster.nd2")
    expected = nd2.imread(str(path))
    by_name = read_picture(as_source(path), ReadOptions(channel="5-fam/ph 9.0", z=3, t=2))
    by_index = read_picture(as_source(path), ReadOptions(channel=0, z=3, t=2))
    assert by_name.channel == by_index.channel == 0
    assert np.array_equal(by_name.nuclear, by_index.nuclear)
    assert np.array_equal(by_name.nuclear, expected[2, 3, 0])
    given = read_picture(as_source(path), ReadOptions(channel=0, pixel_size_um=0.5))
    assert given.pixel_size_um == 0.5 and given.pixel_size_from == "given"


def test_nd2_without_a_channel_is_refused_with_its_channel_names(as_source):
    path = sample("cluster.nd2")
    for check in (read_picture, probe):
        with pytest.raises(OptionError) as refused:
            check(as_source(path), ReadOptions())
        assert refused.value.code == "channel_required"
        assert all(name in str(refused.value) for name in ND2_NAMES)
    with pytest.raises(OptionError) as unknown:
        read_picture(as_source(path), ReadOptions(channel="DAPI"))
    assert unknown.value.code == "bad_channel" and "FM 4-64/2% CHAPS" in str(unknown.value)


# --- Leica LIF: readlif's testdata_2channel_xz.lif (XZ scans) --------------------------------------------------

def test_lif_xz_frames_stepped_in_y_read_as_a_two_channel_z_stack(as_source):
    import liffile

    path = sample("testdata_2channel_xz.lif")
    with liffile.LifFile(path) as lif:
        expected = lif.images[1].asarray()  # Y C Z X
    picture = read_picture(as_source(path), ReadOptions(channel="red", scene="xzy"))
    assert picture.format == "lif" and picture.scene == 1
    assert picture.channel_names == ["Green", "Red"] and picture.channel == 1
    assert picture.sizes == {"T": 1, "C": 2, "Z": 128, "Y": 23, "X": 128}
    assert picture.nuclear.shape == (23, 128) and picture.nuclear.dtype == np.uint8
    assert picture.pixel_size_um == pytest.approx(0.14028, abs=1e-4) and picture.pixel_size_from == "file"
    assert np.array_equal(picture.nuclear, expected[:, 1].max(axis=1))
    plane = read_picture(as_source(path), ReadOptions(channel=0, scene="xzy", z=64))
    assert np.array_equal(plane.nuclear, expected[:, 0, 64])
    with pytest.raises(OptionError) as refused:
        read_picture(as_source(path), ReadOptions(scene="xzy"))
    assert refused.value.code == "channel_required" and "Green, Red" in str(refused.value)


def test_lif_scan_with_no_xy_plane_is_refused_naming_the_scenes(as_source):
    path = sample("testdata_2channel_xz.lif")
    for scene in (0, "xz"):
        with pytest.raises(ImageError) as refused:
            read_picture(as_source(path), ReadOptions(channel=0, scene=scene))
        assert refused.value.code == "unsupported_format"
        assert "no XY plane" in str(refused.value) and "xzt, xzy, xz" in str(refused.value)


# --- Leica LIF: readlif's LeicaLASX_wavelength-sweep_example.lif (lambda scans) ---------------------------------

def test_lif_lambda_scan_wavelengths_are_its_channels(as_source):
    import liffile

    path = sample("LeicaLASX_wavelength-sweep_example.lif")
    with liffile.LifFile(path) as lif:
        expected = lif.images[2].asarray()  # T λ Z Y X
    picture = read_picture(as_source(path), ReadOptions(channel="λ 565 nm", scene="x_y_z_t_lambdaEmi", z=4, t=1))
    by_index = read_picture(as_source(path), ReadOptions(channel=3, scene=2, z=4, t=1))
    assert picture.channel == by_index.channel == 3
    assert picture.channel_names[:3] == ["λ 550 nm", "λ 555 nm", "λ 560 nm"] and len(picture.channel_names) == 10
    assert picture.sizes == {"T": 2, "C": 10, "Z": 11, "Y": 64, "X": 64}
    assert picture.nuclear.dtype == np.uint8 and picture.channels.shape == (64, 64, 10)
    assert picture.pixel_size_um == pytest.approx(0.10481, abs=1e-4)
    assert np.array_equal(picture.nuclear, expected[1, 3, 4]) and np.array_equal(by_index.nuclear, picture.nuclear)
    with pytest.raises(OptionError) as refused:
        read_picture(as_source(path), ReadOptions(scene=0))
    assert refused.value.code == "channel_required" and "λ 550 nm" in str(refused.value)


@pytest.mark.parametrize("name", ["cluster.nd2", "testdata_2channel_xz.lif"])
def test_a_truncated_vendor_file_is_refused_as_corrupt(name):
    data = sample(name).read_bytes()
    for cut in (200, len(data) // 2):
        with pytest.raises(ImageError) as refused:
            read_picture(data[:cut], ReadOptions(channel=0, scene=1 if name.endswith(".lif") else 0))
        assert refused.value.code == "corrupt_image" and name.rsplit(".", 1)[1].upper() in str(refused.value)
