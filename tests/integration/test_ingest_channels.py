"""`nucleus ingest --nuclear-channel`: an instrument's per-channel files of one field become one
multi-channel image, uploaded with the nuclear channel named, against the API served over HTTP; and
once, end to end, against `nucleus up`, where the nuclei table gets one intensity column per channel."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from nucleus.client import Client
from nucleus.commands.ingest import ingest
from nucleus.ingest.names import instrument_field
from nucleus.ingest.stacking import stack_channels
from testkit.channels import two_channel_planes
from testkit.served import served_api


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_api(tmp_path_factory.mktemp("ingest-channels")) as harness:
        yield harness


@pytest.fixture(scope="module")
def token(served) -> str:
    return served.token("uploader")


def write_tiff(path: Path, plane: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, plane)


def plate(folder: Path, names) -> dict[str, np.ndarray]:
    """Writes two channels per field, named by `names(well_row, well_col, site, channel)`; returns name → plane."""
    planes, written = two_channel_planes(64), {}
    for row, col in ((2, 3), (4, 5)):
        for site in (1, 2):
            for channel in (1, 2):
                name = names(row, col, site, channel)
                plane = planes[channel - 1] + row * 10 + col + site  # distinct bytes per field
                write_tiff(folder / name, plane)
                written[name] = plane
    return written


def run(folder: Path, state: Path, server: str, experiment: str, *args: str, env: dict | None = None):
    base = ["--watch", str(folder), "--experiment", experiment, "--server", server, "--state", str(state),
            "--settle", "0", "--once"]
    return CliRunner().invoke(ingest, [*base, *args], env=env, catch_exceptions=False)


def images_of(served, token: str, experiment: str) -> list[dict]:
    api = Client(served.http_url, token)
    return [api.image(row["image_id"]) for row in api.iter_results(experiment)]


def test_opera_fields_become_one_two_channel_image_each(tmp_path, served, token):
    folder = tmp_path / "opera"
    written = plate(folder / "Images", lambda r, c, s, ch: f"r{r:02d}c{c:02d}f{s:02d}p01-ch{ch}sk1fk1fl1.tiff")
    (folder / "Images" / "overview.png").write_bytes(b"not a channel file")
    state = tmp_path / "opera-state.json"
    result = run(folder, state, served.http_url, "opera", "--nuclear-channel", "ch1",
                 env={"NUCLEUS_TOKEN": token})
    assert result.exit_code == 0, result.output

    images = images_of(served, token, "opera")
    assert len(images) == 4  # 2 wells x 2 fields, not 8 channel files (nor the overview)
    assert sorted((i["well"], i["site"]) for i in images) == [("B03", "1"), ("B03", "2"), ("D05", "1"), ("D05", "2")]
    for image in images:
        assert image["channel"] == 0 and image["extra"]["channel_name"] == "ch1"
        assert image["extra"]["plane"] == "1" and image["filename"].endswith(".ome.tif")
        assert image["extra"].get("channel_names", ["ch1", "ch2"]) == ["ch1", "ch2"]

    body = json.loads(state.read_text())
    assert len(body["fields"]) == 4 and {f["outcome"] for f in body["fields"].values()} == {"sent"}
    assert set(body["fields"]["Images/well=B03 site=1 plane=1 timepoint=1"]["files"]) == {"ch1", "ch2"}
    assert body["files"]["Images/overview.png"]["outcome"] == "skipped"
    assert all(body["files"][f"Images/{name}"]["outcome"] == "sent" for name in written)

    again = run(folder, state, served.http_url, "opera", "--nuclear-channel", "ch1", env={"NUCLEUS_TOKEN": token})
    assert again.exit_code == 0 and len(images_of(served, token, "opera")) == 4  # a restart resends nothing

    # a channel written after its field went is never sent on its own
    write_tiff(folder / "Images" / "r02c03f01p01-ch3sk1fk1fl1.tiff", written[next(iter(written))])
    late = run(folder, state, served.http_url, "opera", "--nuclear-channel", "ch1", env={"NUCLEUS_TOKEN": token})
    assert late.exit_code == 0 and "came after its field" in late.output
    assert len(images_of(served, token, "opera")) == 4


def test_without_a_nuclear_channel_multichannel_fields_are_held_back(tmp_path, served, token):
    """Sent one by one, every marker channel would be segmented as nuclei: the ingester asks for the label."""
    folder = tmp_path / "unlabelled"
    plate(folder, lambda r, c, s, ch: f"r{r:02d}c{c:02d}f{s:02d}p01-ch{ch}.tiff")
    write_tiff(folder / "r09c09f01p01-ch1.tiff", two_channel_planes(64)[0] + 99)  # a field with one channel: sent
    result = run(folder, tmp_path / "unlabelled-state.json", served.http_url, "unlabelled",
                 env={"NUCLEUS_TOKEN": token})
    assert result.exit_code == 1 and "--nuclear-channel LABEL" in result.output and "(ch1, ch2)" in result.output
    assert [i["well"] for i in images_of(served, token, "unlabelled")] == ["I09"]


def test_metaxpress_fields_with_the_nuclear_channel_second(tmp_path, served, token):
    folder = tmp_path / "mx"
    plate(folder / "TimePoint_1", lambda r, c, s, ch: f"Screen7_{'ABCDEFGH'[r - 1]}{c:02d}_s{s}_w{ch}.tif")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    result = run(folder, tmp_path / "mx-state.json", served.http_url, "mx", "--nuclear-channel", "W2",
                 "--token-file", str(token_file), "--pixel-size", "0.65", env={"NUCLEUS_TOKEN": ""})
    assert result.exit_code == 0, result.output
    images = images_of(served, token, "mx")
    assert len(images) == 4 and {i["plate"] for i in images} == {"Screen7"}
    assert {i["pixel_size_um"] for i in images} == {0.65}
    assert {(i["channel"], i["extra"]["channel_name"]) for i in images} == {(1, "w2")}


def test_watching_a_field_waits_for_every_channel_to_settle(tmp_path, served, token):
    """The ingester's loop step by step, on a clock of its own: a field goes only when all its channels
    are there and none has changed for the settle time."""
    from nucleus.ingest.client import ApiClient
    from nucleus.ingest.runner import Ingester
    from nucleus.ingest.scanner import SettleTracker
    from nucleus.ingest.state import SentState

    folder = tmp_path / "watched"
    planes = two_channel_planes(64)
    state = SentState(tmp_path / "watch-state.json", folder, served.http_url, "watched").open()
    ingester = Ingester(folder, ApiClient(served.http_url, token, "watched"), state, settle=2.0,
                        nuclear_channel="ch1", channels=("ch1", "ch2"))
    now = [0.0]
    ingester.tracker = SettleTracker(2.0, clock=lambda: now[0])
    try:
        write_tiff(folder / "r01c01f01p01-ch1.tiff", planes[0])
        assert ingester.step() == 1 and ingester.totals.sent == 0      # ch2 not there
        now[0] = 5.0
        assert ingester.step() == 1 and ingester.totals.sent == 0      # ch1 settled, still no ch2
        write_tiff(folder / "r01c01f01p01-ch2.tiff", planes[1][:10])   # being written
        now[0] = 6.0
        assert ingester.step() == 1 and ingester.totals.sent == 0
        write_tiff(folder / "r01c01f01p01-ch2.tiff", planes[1])        # finished, but not yet for 2 s
        now[0] = 7.5
        assert ingester.step() == 1 and ingester.totals.sent == 0
        now[0] = 9.6
        assert ingester.step() == 0 and ingester.totals.sent == 1
    finally:
        state.close()
    (image,) = images_of(served, token, "watched")
    with tifffile.TiffFile(io.BytesIO(served.store.get(_stored_key(served, image["id"])))) as tif:
        assert np.array_equal(tif.series[0].asarray(), planes)  # both channels, whole


def _stored_key(served, image_id: str) -> str:
    from shared.infra.db.tables import Image

    with served.session() as session:
        return session.get(Image, image_id).object_key


def test_a_field_missing_a_channel_waits_and_is_reported(tmp_path, served, token):
    folder = tmp_path / "partial"
    planes = two_channel_planes(64)
    write_tiff(folder / "A01_s1_w1.tif", planes[0])
    write_tiff(folder / "A01_s1_w2.tif", planes[1])
    write_tiff(folder / "A02_s1_w1.tif", planes[0] + 1)  # its w2 is not there yet
    state = tmp_path / "partial-state.json"
    result = run(folder, state, served.http_url, "partial", "--nuclear-channel", "w1", env={"NUCLEUS_TOKEN": token})
    assert result.exit_code == 1 and "well=A02 site=1 (no w2)" in result.output
    assert [i["well"] for i in images_of(served, token, "partial")] == ["A01"]

    (folder / "A03_s1_w1.tif").write_bytes(b"")  # created, not yet written
    write_tiff(folder / "A03_s1_w2.tif", planes[1] + 3)
    result = run(folder, state, served.http_url, "partial", "--nuclear-channel", "w1", env={"NUCLEUS_TOKEN": token})
    assert result.exit_code == 1 and "well=A03 site=1 (an empty channel file)" in result.output

    write_tiff(folder / "A02_s1_w2.tif", planes[1] + 1)
    write_tiff(folder / "A03_s1_w1.tif", planes[0] + 3)
    result = run(folder, state, served.http_url, "partial", "--nuclear-channel", "w1", env={"NUCLEUS_TOKEN": token})
    assert result.exit_code == 0, result.output
    assert sorted(i["well"] for i in images_of(served, token, "partial")) == ["A01", "A02", "A03"]


def test_a_refused_field_goes_again_once_its_bad_file_is_replaced(tmp_path, served, token):
    folder = tmp_path / "fixed"
    planes = two_channel_planes(64)
    write_tiff(folder / "B01_s1_w1.tif", planes[0] + 7)
    write_tiff(folder / "B01_s1_w2.tif", planes[1][:32])  # not the size of w1
    state = tmp_path / "fixed-state.json"
    refused = run(folder, state, served.http_url, "fixed", "--nuclear-channel", "w1", env={"NUCLEUS_TOKEN": token})
    assert refused.exit_code == 1 and "rejected field" in refused.output and "pixels" in refused.output
    assert json.loads(state.read_text())["fields"]["well=B01 site=1"]["outcome"] == "rejected"  # nothing uploaded
    quiet = run(folder, state, served.http_url, "fixed", "--nuclear-channel", "w1", env={"NUCLEUS_TOKEN": token})
    assert quiet.exit_code == 0 and "rejected field" not in quiet.output  # unchanged files: not tried again

    write_tiff(folder / "B01_s1_w2.tif", planes[1] + 7)
    fixed = run(folder, state, served.http_url, "fixed", "--nuclear-channel", "w1", env={"NUCLEUS_TOKEN": token})
    assert fixed.exit_code == 0, fixed.output
    (image,) = images_of(served, token, "fixed")
    assert image["well"] == "B01" and image["extra"]["channel_name"] == "w1"
    assert json.loads(state.read_text())["fields"]["well=B01 site=1"]["outcome"] == "sent"


def test_explicit_channels_and_a_user_pattern(tmp_path, served, token):
    folder = tmp_path / "custom"
    planes = two_channel_planes(64)
    for i, well in enumerate(("C04", "C05")):
        write_tiff(folder / f"{well}-f1-DAPI.tif", planes[0] + i)
        write_tiff(folder / f"{well}-f1-GFP.tif", planes[1] + i)
    write_tiff(folder / "C06-f1-DAPI.tif", planes[0])  # no GFP, and no other file has a third channel
    pattern = r"(?P<well>[A-P]\d+)-f(?P<field>\d+)-(?P<channel>[A-Za-z0-9]+)"
    result = run(folder, tmp_path / "custom-state.json", served.http_url, "custom", "--pattern", pattern,
                 "--nuclear-channel", "dapi", "--channels", "DAPI,GFP", env={"NUCLEUS_TOKEN": token})
    assert result.exit_code == 1 and "C06" in result.output
    images = images_of(served, token, "custom")
    assert sorted(i["well"] for i in images) == ["C04", "C05"]
    assert {i["extra"]["channel_name"] for i in images} == {"DAPI"}


def test_numbered_channels_of_a_user_pattern_are_named_not_indexed(tmp_path, served, token):
    """A channel group capturing 1 and 2 names the channels ch1 and ch2 (a bare 2 would be an index)."""
    folder = tmp_path / "numbered"
    planes = two_channel_planes(64)
    write_tiff(folder / "D07_c01.tif", planes[1])
    write_tiff(folder / "D07_c02.tif", planes[0])
    result = run(folder, tmp_path / "numbered-state.json", served.http_url, "numbered", "--pattern",
                 r"(?P<well>[A-P]\d+)_c(?P<channel>\d+)", "--nuclear-channel", "2", env={"NUCLEUS_TOKEN": token})
    assert result.exit_code == 0, result.output
    (image,) = images_of(served, token, "numbered")
    assert (image["channel"], image["extra"]["channel_name"]) == (1, "ch2")


def test_the_token_comes_from_the_environment_or_a_file_and_is_required(tmp_path, served, token):
    folder = tmp_path / "empty"
    folder.mkdir()
    state = tmp_path / "empty-state.json"
    missing = run(folder, state, served.http_url, "tokens", env={"NUCLEUS_TOKEN": "", "NUCLEUS_INGEST_TOKEN": ""})
    assert missing.exit_code == 2 and "NUCLEUS_TOKEN" in missing.output and "--token-file" in missing.output
    write_tiff(folder / "A01_s1_w1.tif", two_channel_planes(64)[0])
    wrong = run(folder, state, served.http_url, "tokens", env={"NUCLEUS_TOKEN": "not-a-token"})
    assert wrong.exit_code == 1 and "refused the token" in wrong.output
    token_file = tmp_path / "open-token"
    token_file.write_text(token)
    token_file.chmod(0o644)
    from_file = run(folder, state, served.http_url, "tokens", "--token-file", str(token_file),
                    env={"NUCLEUS_TOKEN": "not-a-token"})  # the file wins over the environment
    assert from_file.exit_code == 0, from_file.output
    assert "can be read by other users" in from_file.output
    assert len(images_of(served, token, "tokens")) == 1
    on_the_command_line = run(folder, state, served.http_url, "tokens", "--token", token, env={"NUCLEUS_TOKEN": ""})
    assert on_the_command_line.exit_code == 0 and "visible to other users in `ps`" in on_the_command_line.output
    bad = run(folder, state, served.http_url, "tokens", "--pattern", r"(?P<well>[A-P]\d+)", "--nuclear-channel", "w1",
              env={"NUCLEUS_TOKEN": token})
    assert bad.exit_code == 2 and "channel" in bad.output
    zero = run(folder, state, served.http_url, "tokens", "--pixel-size", "0", env={"NUCLEUS_TOKEN": token})
    assert zero.exit_code == 2 and "--pixel-size" in zero.output


def test_stacking_is_deterministic_and_refuses_mismatched_channels():
    planes = two_channel_planes(32)
    files = [("ch1", "a-ch1.tif", _tiff(planes[0])), ("ch2", "a-ch2.tif", _tiff(planes[1]))]
    first, second = stack_channels(files), stack_channels(files)
    assert first == second  # the same field twice is a duplicate on the server
    with tifffile.TiffFile(io.BytesIO(first)) as tif:
        assert tif.series[0].axes == "CYX" and np.array_equal(tif.series[0].asarray(), planes)
        assert 'Name="ch1"' in tif.ome_metadata and 'Name="ch2"' in tif.ome_metadata
    from nucleus.ingest.stacking import StackError
    with pytest.raises(StackError, match="pixels"):
        stack_channels([files[0], ("ch2", "b-ch2.tif", _tiff(planes[1][:16]))])
    assert instrument_field("Plate_A01_s1_w1_thumb0A1B2C3D4E5F.tif") is None


def _tiff(plane: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, plane)
    return buffer.getvalue()


def test_end_to_end_columns_per_channel(tmp_path, embedded_stack):
    """nucleus up segments ch1 and measures both channels: nuclei.csv has mean_intensity_ch1 and _ch2."""
    folder = tmp_path / "e2e"
    planes = two_channel_planes(128)
    write_tiff(folder / "r01c01f01p01-ch1sk1fk1fl1.tiff", planes[0])
    write_tiff(folder / "r01c01f01p01-ch2sk1fk1fl1.tiff", planes[1])
    result = run(folder, tmp_path / "e2e-state.json", embedded_stack.url, "e2e", "--nuclear-channel", "ch1",
                 env={"NUCLEUS_TOKEN": embedded_stack.token})
    assert result.exit_code == 0, result.output
    api = Client(embedded_stack.url, embedded_stack.token)
    (row,) = list(api.iter_results("e2e"))
    found = api.wait_for_result(row["image_id"], timeout=180)
    assert found["count"] >= 3
    table = list(csv.DictReader(io.StringIO(api.download(row["image_id"], "nuclei.csv").decode())))
    assert {"mean_intensity_ch1", "mean_intensity_ch2"} <= set(table[0])
    marker = sorted(float(r["mean_intensity_ch2"]) for r in table)
    assert marker[-1] > 1000 > marker[0]  # the EdU-like channel measured inside each nucleus, not segmented
