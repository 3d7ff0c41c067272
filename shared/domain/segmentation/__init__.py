"""From the network's maps to nuclei: instance splitting, and big images segmented region by region."""
