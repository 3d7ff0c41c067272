"""Training the network: the loop and its schedule, augmentation, weight averaging."""
