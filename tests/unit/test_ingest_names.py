"""File-name metadata for `nucleus ingest`: the default instrument patterns and a custom --pattern."""
from __future__ import annotations

import pytest

from nucleus.ingest.names import PatternError, compile_pattern, parse_name, row_letters


@pytest.mark.parametrize("name, expected", [
    # Opera / Operetta (Harmony export): row 02 → B, column 03, field → site, ch → instrument channel
    ("r02c03f01p01-ch1sk1fk1fl1.tiff", {"well": "B03", "site": "1", "instrument_channel": "1"}),
    ("r02c03f01p01-ch1.tiff", {"well": "B03", "site": "1", "instrument_channel": "1"}),
    ("r16c24f09p03-ch4sk2fk1fl1.TIFF", {"well": "P24", "site": "9", "instrument_channel": "4"}),
    ("r01c01f12-ch2.tif", {"well": "A01", "site": "12", "instrument_channel": "2"}),
    ("Images/r05c11f02p01-ch3.tiff", {"well": "E11", "site": "2", "instrument_channel": "3"}),
    # MetaXpress / ImageXpress: [plate_]well_s<site>_w<wavelength>[GUID]
    ("A01_s1_w1.tif", {"well": "A01", "site": "1", "instrument_channel": "1"}),
    ("Plate1_A01_s2_w2.tif", {"plate": "Plate1", "well": "A01", "site": "2", "instrument_channel": "2"}),
    ("Plate1_B7_s3_w4.TIF", {"plate": "Plate1", "well": "B07", "site": "3", "instrument_channel": "4"}),
    ("2024-05 screen_H12_s4_w2A6B1C0D2-1F3E-4B5A-9C8D-0123456789AB.tif",
     {"plate": "2024-05 screen", "well": "H12", "site": "4", "instrument_channel": "2"}),
    ("TimePoint_1/C05_w3.tif", {"well": "C05", "instrument_channel": "3"}),
    ("D10.png", {"well": "D10"}),
])
def test_default_patterns(name, expected):
    assert parse_name(name) == expected


@pytest.mark.parametrize("name", ["image_0001.png", "IMG1234.png", "scan.tiff", "plate_a01_s1.tif", "nuclei.jpg"])
def test_names_without_metadata_give_nothing(name):
    assert parse_name(name) == {}


def test_rows_past_z_use_two_letters():
    assert [row_letters(r) for r in ("1", "02", "26", "27", "32", "c")] == ["A", "B", "Z", "AA", "AF", "C"]


def test_custom_pattern_with_well_condition_and_folder_plate():
    pattern = compile_pattern(r"(?P<plate>plate\d+)/(?P<condition>[a-z]+)-(?P<well>[A-P]\d+)-f(?P<site>\d+)")
    assert parse_name("run7/plate3/dmso-C4-f02.png", (pattern,)) == {
        "plate": "plate3", "well": "C04", "site": "2", "condition": "dmso"}
    assert parse_name("run7/plate3/notes.png", (pattern,)) == {}


def test_custom_pattern_with_row_and_column_numbers():
    pattern = compile_pattern(r"R(?P<row>\d+)_C(?P<col>\d+)_ch(?P<channel>\d+)")
    assert parse_name("R3_C12_ch02.tif", (pattern,)) == {"well": "C12", "instrument_channel": "2"}


def test_custom_pattern_replaces_the_defaults():
    pattern = compile_pattern(r"(?P<condition>drug|control)")
    assert parse_name("A01_s1_w1_control.tif", (pattern,)) == {"condition": "control"}


@pytest.mark.parametrize("text", [r"(?P<well>[A-P]\d+", r"(?P<nothing>\d+)", r"\d+"])
def test_bad_patterns_are_refused(text):
    with pytest.raises(PatternError):
        compile_pattern(text)
