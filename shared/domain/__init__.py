"""The science: images, the network, segmentation, measurement, accuracy, training, datasets and label
formats. Imports no database, object store, queue, settings or web code (tests/unit/test_layout.py)."""
