"""Reading microscope images: formats, channels, planes, pixel sizes and the limits checked before decoding."""
