"""Reading microscope files on purpose: the nuclear channel by name or index, Z and T by option, RGB kept as
colour, the pixel size from the metadata (issue 28.1), through shared.domain.imaging.reading, `nucleus segment` and uploads."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image as PILImage

from shared.domain.imaging.errors import ImageError, ImageTooLarge
from shared.domain.imaging.read_options import OptionError, ReadOptions, channel_columns, check_pixel_size
from shared.domain.imaging.reading import read_picture
from testkit.channels import ome_tiff, two_channel_planes

def hyperstack() -> tuple[np.ndarray, bytes]:
    """An ImageJ T=3, Z=5, C=2 stack with 0.5 µm pixels; each plane's value tells where it came from."""
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, (3, 5, 2, 32, 40), dtype=np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, stack, imagej=True, metadata={"axes": "TZCYX", "unit": "um"}, resolution=(2.0, 2.0))
    return stack, buffer.getvalue()


@pytest.fixture(scope="module")
def ome_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("channels") / "plate.ome.tif"
    path.write_bytes(ome_tiff(two_channel_planes()))
    return path


def test_the_nuclear_channel_by_name_case_insensitive_or_index(ome_file):
    planes = two_channel_planes()
    for wanted in ("Hoechst", "hoechst", "HOECHST", 0):
        picture = read_picture(ome_file, ReadOptions(channel=wanted))
        assert picture.channel == 0 and np.array_equal(picture.nuclear, planes[0])
    picture = read_picture(ome_file.read_bytes(), ReadOptions(channel="EdU"))
    assert picture.channel == 1 and np.array_equal(picture.nuclear, planes[1])
    assert picture.channel_names == ["Hoechst", "EdU"]
    assert np.array_equal(picture.channels, np.moveaxis(planes, 0, -1))  # every channel kept for measuring
    assert picture.record() == {"channel_name": "EdU"}


def test_no_channel_chosen_is_refused_with_the_names(ome_file):
    with pytest.raises(OptionError) as refused:
        read_picture(ome_file)
    assert refused.value.code == "channel_required"
    assert "Hoechst" in refused.value.message and "EdU" in refused.value.message


@pytest.mark.parametrize("wanted, code", [("DAPI", "bad_channel"), (2, "bad_channel")])
def test_an_unknown_channel_lists_the_known_ones(ome_file, wanted, code):
    with pytest.raises(OptionError) as refused:
        read_picture(ome_file, ReadOptions(channel=wanted))
    assert refused.value.code == code
    assert "Hoechst" in refused.value.message and "EdU" in refused.value.message


def test_unnamed_channels_are_ch_n_and_three_fluorescence_channels_are_not_rgb():
    planes = np.stack([two_channel_planes()[0]] * 3)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, planes, photometric="minisblack", metadata={"axes": "CYX"})
    with pytest.raises(OptionError) as refused:
        read_picture(buffer.getvalue())
    assert "ch0, ch1, ch2" in refused.value.message
    assert read_picture(buffer.getvalue(), ReadOptions(channel="CH2")).channel == 2
    assert channel_columns(["Hoechst 33342", "γH2AX", "DAPI", "dapi"]) == ["hoechst_33342", "_h2ax", "dapi_2", "dapi_3"]


def test_z_and_t_are_chosen_by_option_and_recorded():
    stack, data = hyperstack()
    default = read_picture(data, ReadOptions(channel=1))
    assert np.array_equal(default.nuclear, stack[0, :, 1].max(axis=0))  # Z: max projection, T: first
    assert default.record() == {"channel_name": "ch1", "z": "max", "t": "0"}
    plane = read_picture(data, ReadOptions(channel=0, z=3, t=2))
    assert np.array_equal(plane.nuclear, stack[2, 3, 0])
    assert np.array_equal(plane.channels, np.moveaxis(stack[2, 3], 0, -1))
    assert plane.record() == {"channel_name": "ch0", "z": "3", "t": "2"}
    for options, word in ((ReadOptions(channel=0, z=5), "Z plane 5"), (ReadOptions(channel=0, t=3), "time point 3")):
        with pytest.raises(OptionError, match=word):
            read_picture(data, options)


def test_rgb_photos_stay_rgb():
    rgb = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    png, jpeg, tiff = io.BytesIO(), io.BytesIO(), io.BytesIO()
    PILImage.fromarray(rgb).save(png, format="PNG")
    PILImage.fromarray(rgb).save(jpeg, format="JPEG")
    tifffile.imwrite(tiff, rgb, photometric="rgb")
    for data in (png.getvalue(), jpeg.getvalue(), tiff.getvalue()):
        picture = read_picture(data)
        assert picture.rgb and picture.channel is None and picture.nuclear.shape == (40, 50, 3)
        assert picture.channel_names == ["ch0", "ch1", "ch2"] and picture.record() == {"channel_name": "rgb"}
    assert np.array_equal(read_picture(png.getvalue()).nuclear, rgb)
    assert np.array_equal(read_picture(png.getvalue(), ReadOptions(channel=2)).nuclear, rgb[..., 2])


def test_pixel_size_from_the_metadata_unless_given(ome_file):
    assert read_picture(ome_file, ReadOptions(channel=0)).pixel_size_um == pytest.approx(0.325)
    assert read_picture(ome_file, ReadOptions(channel=0)).pixel_size_from == "file"
    given = read_picture(ome_file, ReadOptions(channel=0, pixel_size_um=0.65))
    assert (given.pixel_size_um, given.pixel_size_from) == (0.65, "given")
    assert read_picture(hyperstack()[1], ReadOptions(channel=0)).pixel_size_um == pytest.approx(0.5)
    centimetres = io.BytesIO()
    tifffile.imwrite(centimetres, np.zeros((8, 8), np.uint8), resolution=(40000, 40000), resolutionunit="CENTIMETER")
    assert read_picture(centimetres.getvalue()).pixel_size_um == pytest.approx(0.25)
    inches = io.BytesIO()  # a photo's print size is no pixel size
    tifffile.imwrite(inches, np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_picture(inches.getvalue()).pixel_size_um is None


@pytest.mark.parametrize("value", ["0", "-0.3", "nan", "inf", "abc", 0.0, -1])
def test_a_bad_pixel_size_is_refused(value):
    with pytest.raises(OptionError) as refused:
        check_pixel_size(value)
    assert refused.value.code == "bad_pixel_size" and "positive" in refused.value.message


def test_the_limits_apply_before_pixels_load(ome_file):
    with pytest.raises(ImageTooLarge):
        read_picture(ome_file, ReadOptions(channel=0), max_pixels=128 * 127)
    with pytest.raises(ImageTooLarge):
        read_picture(ome_file, ReadOptions(channel=0), max_bytes=1000)
    with pytest.raises(ImageError) as refused:
        read_picture(b"\x00" * 64)
    assert refused.value.code == "unsupported_format" and "CZI" in refused.value.message


def test_a_czi_file_through_bioio(tmp_path):
    from pylibCZIrw import czi as pyczi

    planes = two_channel_planes(64)
    path = tmp_path / "field.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for c in range(2):
            writer.write(data=planes[c], plane={"C": c, "Z": 0, "T": 0})
        writer.write_metadata(document_name="field", channel_names={0: "DAPI", 1: "GFP"},
                              scale_x=0.2e-6, scale_y=0.2e-6)
    picture = read_picture(path.read_bytes(), ReadOptions(channel="dapi"))
    assert picture.format == "czi" and picture.channel_names == ["DAPI", "GFP"]
    assert picture.pixel_size_um == pytest.approx(0.2)
    assert np.array_equal(picture.nuclear, planes[0]) and np.array_equal(picture.channels[..., 1], planes[1])
    with pytest.raises(OptionError, match="DAPI, GFP"):
        read_picture(path)


# --- nucleus segment ---------------------------------------------------------------------------------------------

def run_segment(*args):
    from nucleus.cli import main

    return CliRunner().invoke(main, ["segment", *map(str, args)], catch_exceptions=False)


def test_segment_by_channel_name_measures_every_channel_in_microns(ome_file, tmp_path):
    out = tmp_path / "out"
    result = run_segment(ome_file, "--channel", "Hoechst", "--out", out)
    assert result.exit_code == 0, result.output
    with (out / "plate.ome_nuclei.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert {"mean_intensity_hoechst", "mean_intensity_edu", "max_intensity_edu", "integrated_intensity_edu",
            "area_um2", "perimeter_um", "centroid_x_um"} <= set(rows[0])
    edu = sorted(round(float(r["mean_intensity_edu"])) for r in rows)
    assert edu[0] < 100 and edu[-1] > 1000  # nuclei measured in the marker channel, not the nuclear one
    for row in rows:
        assert float(row["area_um2"]) == pytest.approx(float(row["area"]) * 0.325 ** 2, rel=1e-5)

    cellprofiler = run_segment(ome_file, "--channel", "0", "--z", "max", "--out", tmp_path / "cp",
                               "--columns", "cellprofiler", "--pixel-size", "0.5")
    assert cellprofiler.exit_code == 0, cellprofiler.output
    with (tmp_path / "cp" / "plate.ome_nuclei.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert {"ImageNumber", "ObjectNumber", "AreaShape_Area", "Location_Center_X",
            "Intensity_MeanIntensity_edu", "AreaShape_Area_um2"} <= set(row)
    assert float(row["AreaShape_Area_um2"]) == pytest.approx(float(row["AreaShape_Area"]) * 0.25, rel=1e-5)


def test_segment_names_the_channels_and_refuses_bad_options(ome_file, tmp_path):
    no_channel = run_segment(ome_file, "--out", tmp_path / "a")
    assert no_channel.exit_code == 1 and "Hoechst, EdU" in no_channel.output
    assert "nothing segmented" in no_channel.output  # found from the metadata, before the model loads
    assert "Hoechst, EdU" in (tmp_path / "a" / "summary.csv").read_text()
    unknown = run_segment(ome_file, "--channel", "DAPI", "--out", tmp_path / "b")
    assert unknown.exit_code == 1 and "no channel named 'DAPI'" in unknown.output
    for option, value in (("--pixel-size", "0"), ("--pixel-size", "-2"), ("--z", "top"), ("--t", "-1")):
        refused = run_segment(ome_file, "--channel", "0", option, value, "--out", tmp_path / "c")
        assert refused.exit_code == 2 and option in refused.output, refused.output


def test_an_ome_zarr_folder(tmp_path):
    import zarr

    stack = np.random.default_rng(4).integers(0, 4000, (3, 2, 4, 32, 40), dtype=np.uint16)
    group = zarr.open_group(str(tmp_path / "field.zarr"), mode="w")
    group.create_array("0", data=stack, chunks=(1, 1, 1, 32, 40))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    group.attrs["ome"] = {"version": "0.5", "omero": {"channels": [{"label": "DAPI"}, {"label": "GFP"}]},
                          "multiscales": [{"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
                              {"type": "scale", "scale": [1, 1, 2.0, 0.65, 0.65]}]}]}]}
    picture = read_picture(tmp_path / "field.zarr", ReadOptions(channel="gfp", z=2, t=1))
    assert (picture.format, picture.channel_names, picture.pixel_size_um) == ("ome-zarr", ["DAPI", "GFP"], 0.65)
    assert np.array_equal(picture.nuclear, stack[1, 1, 2])
    assert np.array_equal(read_picture(tmp_path / "field.zarr", ReadOptions(channel=0)).nuclear,
                          stack[0, 0].max(axis=0))
    with pytest.raises(OptionError, match="DAPI, GFP"):
        read_picture(tmp_path / "field.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ImageError, match="not an OME-Zarr image|no OME-Zarr image"):
        read_picture(tmp_path / "plain")


def test_scenes_by_index_or_name():
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, ome=True) as writer:
        for name, value in (("A1 field 1", 5), ("B2 field 1", 9)):
            writer.write(np.full((2, 16, 20), value, np.uint16), photometric="minisblack",
                         metadata={"axes": "CYX", "Name": name, "Channel": {"Name": ["DAPI", "GFP"]}})
    data = buffer.getvalue()
    first = read_picture(data, ReadOptions(channel="dapi"))
    assert first.nuclear[0, 0] == 5 and first.record() == {"channel_name": "DAPI", "scene": "0"}
    for scene in (1, "b2 FIELD 1"):
        second = read_picture(data, ReadOptions(channel="dapi", scene=scene))
        assert second.nuclear[0, 0] == 9 and second.record()["scene"] == "1"
    with pytest.raises(OptionError, match="0: A1 field 1, 1: B2 field 1"):
        read_picture(data, ReadOptions(channel="dapi", scene=2))


def test_the_read_bench_runs_at_a_small_size():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "bench/read_formats.py", "--size", "128", "--repeat", "1", "--z", "2"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("ome-tiff", "imagej tiff", "png 16-bit", "jpeg 8-bit", "ome-tiff z=2 (max)", "czi (bioio)"):
        line = next(line for line in proc.stdout.splitlines() if line.startswith(name))
        assert "(128, 128)" in line, line
