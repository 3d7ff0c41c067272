"""The size model: the median nucleus diameter read off the network's encoder, fitted when weights are exported."""
import numpy as np
import pytest
import torch
from skimage.transform import rescale

from shared.domain.datasets.labelled import LabelledImage, load
from shared.domain.imaging.imageio import read_image, read_labels
from shared.domain.model import scale, size
from shared.domain.model.preprocess import normalize
from shared.domain.model.segmenter import Segmenter, export_weights, shipped_weights_path, weights_version
from testkit import data


def test_the_ridge_recovers_a_diameter_hidden_in_noisy_features():
    rng = np.random.default_rng(0)
    diameters = np.exp(rng.uniform(np.log(8), np.log(60), 400))
    # Features whose logs follow log(diameter) with different slopes, plus noise and two useless ones.
    slopes = np.array([1.0, -0.5, 2.0, 0.0, 0.0])
    styles = np.exp(np.log(diameters)[:, None] * slopes + rng.normal(0, 0.1, (400, 5)) + 3)
    model = size.SizeModel.fit(styles[:300], diameters[:300], ridge=1.0)
    predicted = np.array([model.diameter(s) for s in styles[300:]])
    assert np.median(np.abs(np.log(predicted / diameters[300:]))) < 0.05
    restored = size.SizeModel.from_dict(model.to_dict())
    assert restored.diameter(styles[0]) == pytest.approx(model.diameter(styles[0]))


def test_a_zoomed_window_shows_the_centre_enlarged():
    x = torch.arange(600 * 700, dtype=torch.float32).reshape(1, 600, 700).repeat(3, 1, 1)
    assert size.central_window(x).shape == (3, 512, 512)
    assert size.central_window(x[:, :100, :300]).shape == (3, 100, 300)
    assert size.zoomed_window(x, 1.6).shape == (3, 512, 512)
    assert size.zoomed_window(x[:, :100, :100], 2.0).shape == (3, 200, 200)
    # the centre stays the centre
    centre = float(x[0, 300, 350])
    assert float(size.zoomed_window(x, 1.6)[0, 256, 256]) == pytest.approx(centre, rel=0.01)


def test_onnx_and_torch_read_the_same_style():
    x = torch.from_numpy(normalize(read_image(data.pick("fluorescence", 256, 256)[0].path)))
    onnx, plain = (Segmenter(precision="fp32", runtime=name) for name in ("onnx", "torch"))
    assert onnx.style(x).shape == (992,)
    np.testing.assert_allclose(onnx.style(x), plain.style(x), rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def shipped():
    return Segmenter(precision="fp32")


@pytest.mark.parametrize("kind", ["fluorescence", "stained-tissue", "brightfield"])
def test_the_shipped_size_model_reads_held_out_nuclei_and_their_enlargement(shipped, kind):
    assert shipped.size_model is not None
    sample = data.pick(kind)[0]
    image, labels = read_image(sample.path), read_labels(sample.labels_path)
    true = scale.median_diameter(labels)
    read = shipped.size_model.diameter(shipped.style(size.central_window(torch.from_numpy(normalize(image)))))
    assert abs(np.log(read / true)) < np.log(1.35), (read, true)
    crop = image[:200, :200]
    enlarged = rescale(crop.astype(np.float32), 2, order=1, channel_axis=-1 if crop.ndim == 3 else None)
    small = shipped.size_model.diameter(shipped.style(torch.from_numpy(normalize(crop))))
    large = shipped.size_model.diameter(shipped.style(torch.from_numpy(normalize(enlarged))))
    assert 1.5 < large / small < 2.6, (small, large)


def test_a_blank_image_is_not_resized(shipped):
    assert shipped.scale_factor(np.full((300, 300), 7, np.uint8)) == 1.0
    assert shipped.segment(np.full((300, 300), 7, np.uint8)).max() == 0


def test_exported_weights_carry_a_size_model_fitted_for_them(tmp_path):
    source = torch.load(shipped_weights_path(), map_location="cpu", weights_only=True)
    source["size"] = None
    torch.save(source, tmp_path / "bare.pt")
    assert Segmenter(tmp_path / "bare.pt").size_model is None  # measured by a quick segmentation instead

    root = data.dsb_dir()
    samples = data.pick("fluorescence", 256, 256, n=size.MIN_FIT_IMAGES, held_out=False)
    items = [load(root, s.image_id) for s in samples]
    empty = LabelledImage("empty", items[0].image, np.zeros_like(items[0].labels), "fluorescence")
    # Too few images with nuclei to fit one that measures better than a quick segmentation: none is fitted.
    assert export_weights(tmp_path / "bare.pt", tmp_path / "few.pt", size_items=items[1:] + [empty]) is None
    assert Segmenter(tmp_path / "few.pt").size_model is None

    returned = export_weights(tmp_path / "bare.pt", tmp_path / "fitted.pt", size_items=items + [empty])
    fitted = Segmenter(tmp_path / "fitted.pt", precision="fp32")
    assert fitted.size_model == returned and len(fitted.size_model.coef) == 992
    assert fitted.version != weights_version((tmp_path / "bare.pt").read_bytes())
    # Re-exporting without images keeps the fitted model; the history of the original export survives.
    export_weights(tmp_path / "fitted.pt", tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", map_location="cpu", weights_only=True)
    assert again["size"] == fitted.size_model.to_dict()
    assert again["extra"]["history"] == source["extra"]["history"]
    # It reads the nuclei of images it was fitted on to within a third.
    for item in items[:8]:
        read = fitted.size_model.diameter(fitted.style(torch.from_numpy(normalize(item.image))))
        assert abs(np.log(read / scale.median_diameter(item.labels))) < np.log(1.35)
    with pytest.raises(ValueError, match="nuclei"):
        size.fit(fitted.style, [empty])


def test_held_out_images_of_small_nuclei_are_enlarged_as_much_as_they_need(shipped, tmp_path):
    """Images of small nuclei are the ones a quick segmentation misreads (it merges them), and with it the
    enlargement stopped at 1.4x; the size model takes them to the trained diameter, up to the training bound."""
    bare = torch.load(shipped_weights_path(), map_location="cpu", weights_only=True)
    torch.save({**bare, "size": None}, tmp_path / "bare.pt")
    quick_look = Segmenter(tmp_path / "bare.pt", precision="fp32")
    held_out = data.validation_ids()
    size_errors, quick_errors = [], []
    for sample in data.load_index():
        if sample.image_id not in held_out or sample.width * sample.height > 512 * 512:
            continue
        needed = scale.factor(scale.median_diameter(read_labels(sample.labels_path)), shipped.diameter)
        if needed > 1.6:
            image = read_image(sample.path)
            size_errors.append(abs(np.log(shipped.scale_factor(image) / needed)))
            quick_errors.append(abs(np.log(quick_look.scale_factor(image) / needed)))
    assert len(size_errors) >= 20
    assert np.mean(size_errors) < 0.12 and np.mean(size_errors) < np.mean(quick_errors) / 2
