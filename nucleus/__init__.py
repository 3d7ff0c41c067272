"""The `nucleus` command line: run the product, segment and evaluate images, train, ingest."""
