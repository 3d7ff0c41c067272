"""`nucleus dataset import` stores a labelled set and its validation split in the object store (moto S3 here), once;
a trainer without the set on disk reads it from there through a local cache (shared.infra.base_set.base_sets)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from shared.infra.base_set import base_sets, read_manifest
from shared.infra.settings import Settings
from shared.domain.datasets.labelled import load
from shared.domain.imaging.imageio import read_labels
from shared.infra.storage import make_store
from testkit import data
from testkit.env import service_env

TRAIN_IMAGES = 4
VALIDATION_IMAGES = 2


@pytest.fixture
def small_set(tmp_path):
    """A pairs-layout folder of 4 training and 2 validation-split DSB images (links, not copies) with index.csv."""
    held = data.validation_ids()
    fluorescence = [s for s in data.load_index() if s.kind == "fluorescence" and s.width == 256]
    chosen = [s for s in fluorescence if s.image_id not in held][:TRAIN_IMAGES]
    chosen += [s for s in fluorescence if s.image_id in held][:VALIDATION_IMAGES]
    root = tmp_path / "set"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for sample in chosen:
        (root / "images" / sample.path.name).symlink_to(sample.path)
        (root / "labels" / sample.labels_path.name).symlink_to(sample.labels_path)
    index = (data.dsb_dir() / "index.csv").read_text().splitlines()
    wanted = {s.image_id for s in chosen}
    (root / "index.csv").write_text("\n".join([index[0]] + [l for l in index[1:] if l.split(",")[0] in wanted]) + "\n")
    return root, chosen


@pytest.fixture
def s3_settings(tmp_path, s3_bucket_env):
    def settings(**overrides) -> Settings:
        env = {k.removeprefix("NUCLEUS_").lower(): v for k, v in s3_bucket_env.items()}
        return Settings(data_dir=tmp_path / "data", **env, **overrides)
    return settings


def nucleus(tmp_path, s3_bucket_env, *args) -> subprocess.CompletedProcess:
    env = service_env(tmp_path / "data", **s3_bucket_env)
    return subprocess.run([sys.executable, "-m", "nucleus.cli", "dataset", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_import_stores_the_set_and_its_split_once(tmp_path, s3_bucket_env, s3_settings, small_set):
    root, chosen = small_set
    first = nucleus(tmp_path, s3_bucket_env, "import", str(root))
    assert first.returncode == 0, first.stderr
    assert "6 images, 2 in the validation split; 12 files uploaded" in first.stdout

    store = make_store(s3_settings())
    manifest = read_manifest(store, "base")
    assert sorted(manifest["images"]) == sorted(s.image_id for s in chosen)
    assert sorted(manifest["validation"]) == sorted(s.image_id for s in chosen[TRAIN_IMAGES:])
    assert {e["kind"] for e in manifest["images"].values()} == {"fluorescence"}
    for sample in chosen:
        entry = manifest["images"][sample.image_id]
        assert store.get(entry["image"]) == sample.path.read_bytes()
        assert store.get(entry["labels"]) == sample.labels_path.read_bytes()
    created = manifest["created"]

    again = nucleus(tmp_path, s3_bucket_env, "import", str(root))
    assert again.returncode == 0, again.stderr
    assert "0 files uploaded, 12 already there (unchanged)" in again.stdout
    assert read_manifest(store, "base")["created"] == created

    # one label corrected: only that file goes up again, and the manifest names its new content
    changed = chosen[0]
    target = root / "labels" / changed.labels_path.name
    target.unlink()
    labels = read_labels(changed.labels_path)
    labels[labels == labels.max()] = 0
    from shared.domain.outputs import labels_tiff
    target.with_suffix(".tif").write_bytes(labels_tiff(labels))
    third = nucleus(tmp_path, s3_bucket_env, "import", str(root))
    assert third.returncode == 0, third.stderr
    assert "1 files uploaded, 11 already there" in third.stdout
    entry = read_manifest(store, "base")["images"][changed.image_id]
    assert entry["labels"].endswith(".tif") and np.array_equal(read_labels_bytes(store.get(entry["labels"])), labels)

    listed = nucleus(tmp_path, s3_bucket_env, "list")
    assert listed.stdout.startswith("base\t6 images\t2 validation")


def read_labels_bytes(raw: bytes) -> np.ndarray:
    from shared.domain.imaging.imageio import decode

    return decode(raw).astype(np.uint32)


def test_competition_layout_is_stored_as_label_images(tmp_path, s3_settings):
    from shared.infra.base_set import import_set

    sample = data.dsb_dir() / "dsb-layout-sample"
    store = make_store(s3_settings())
    report = import_set(sample, store, name="sample", validation=[])
    assert (report.images, report.uploaded, report.validation) == (4, 8, 0)
    for name, entry in read_manifest(store, "sample")["images"].items():
        assert np.array_equal(read_labels_bytes(store.get(entry["labels"])), load(sample, name, hints={}).labels)


def test_a_folder_without_labelled_images_is_refused_and_stores_nothing(tmp_path, s3_bucket_env, s3_settings):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    result = nucleus(tmp_path, s3_bucket_env, "import", str(empty), "--name", "nothing")
    assert result.returncode == 1
    assert "holds no labelled images" in result.stderr and "Traceback" not in result.stderr
    assert make_store(s3_settings()).list("datasets/") == []


def test_trainer_without_local_data_reads_the_stored_set_through_its_cache(tmp_path, s3_settings, small_set):
    from shared.infra.base_set import import_set

    root, chosen = small_set
    settings = s3_settings(training_base_dir=tmp_path / "not-here", training_cache_dir=tmp_path / "cache")
    store = make_store(settings)
    assert base_sets(settings, store) == ([], [])  # nothing imported yet: no base set, not an error

    import_set(root, store)
    train, validation = base_sets(settings, store)
    assert sorted(i.name for i in train) == sorted(s.image_id for s in chosen[:TRAIN_IMAGES])
    assert sorted(i.name for i in validation) == sorted(s.image_id for s in chosen[TRAIN_IMAGES:])
    for item in train + validation:
        assert item.kind == "fluorescence"
        assert np.array_equal(item.labels, read_labels(root / "labels" / f"{item.name}.png"))

    # the second run reads its cache: the stored files are not fetched again
    manifest = read_manifest(store, "base")
    for entry in manifest["images"].values():
        store.delete(entry["image"])
        store.delete(entry["labels"])
    again_train, again_validation = base_sets(settings, store)
    assert [i.name for i in again_train] == [i.name for i in train]
    assert len(again_validation) == VALIDATION_IMAGES

    # limits apply as to a local base folder
    limited = s3_settings(training_base_dir=tmp_path / "not-here", training_cache_dir=tmp_path / "cache",
                          training_base_limit=1, training_validation_limit=1)
    assert tuple(map(len, base_sets(limited, store))) == (1, 1)

    # a stored file that no longer matches its manifest is refused, not trained on
    import_set(root, store)
    store.put(manifest["images"][chosen[0].image_id]["labels"], b"not the imported labels")
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(ValueError, match="does not match its manifest"):
        base_sets(settings, store)
