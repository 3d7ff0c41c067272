"""Mixed precision is a speed choice: it must not change what the model finds."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.domain.imaging.imageio import read_image
from shared.domain.accuracy import average_precision
from shared.domain.model import precision
from shared.domain.model.segmenter import Segmenter


def test_precision_names_are_checked():
    cpu = torch.device("cpu")
    assert precision.resolve("fp32", cpu) is None
    assert precision.resolve("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("half", cpu)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU flags from Linux's /proc/cpuinfo")
def test_auto_uses_bfloat16_only_where_the_cpu_has_the_instructions():
    # AVX-512 alone is not enough: oneDNN then emulates bfloat16, slower than float32.
    flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    expected = torch.bfloat16 if flags & {"avx512_bf16", "amx_bf16"} else None
    assert precision.resolve("auto", torch.device("cpu")) is expected


def test_bfloat16_and_float32_find_the_same_nuclei(dsb_samples):
    # bfloat16 moves the maps by a few thousandths; where a seed or an object sits right at a threshold, that can
    # split, merge or drop one nucleus: one in 10-16 is an AP of 0.93 on that image. So: nearly equal maps, counts
    # within one nucleus on each image, and the nuclei matching at 0.95 AP over the four images.
    full, mixed = Segmenter(precision="fp32"), Segmenter(precision="bf16")
    agreement = []
    for sample in dsb_samples:
        image = read_image(sample.path)
        a, b = full.predict(image), mixed.predict(image)
        assert np.abs(a.foreground - b.foreground).mean() < 0.01
        labels_full, labels_mixed = full.segment(image), mixed.segment(image)
        assert abs(int(labels_full.max()) - int(labels_mixed.max())) <= 1
        agreement.append(average_precision(labels_full, labels_mixed, 0.5))
    assert np.mean(agreement) > 0.95, agreement
