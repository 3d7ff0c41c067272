"""CellProfiler-style column names for the per-nucleus tables, so that CellProfiler Analyst and scripts written
for CellProfiler's object tables read them unchanged (`nucleus segment --columns cellprofiler`,
`?columns=cellprofiler` on the exports)."""
from __future__ import annotations

import re

STYLES = ("native", "cellprofiler")
FIXED = {
    "image_number": "ImageNumber", "label": "ObjectNumber",
    "area": "AreaShape_Area", "perimeter": "AreaShape_Perimeter",
    "equivalent_diameter": "AreaShape_EquivalentDiameter", "eccentricity": "AreaShape_Eccentricity",
    "solidity": "AreaShape_Solidity", "centroid_x": "Location_Center_X", "centroid_y": "Location_Center_Y",
    "mean_intensity": "Intensity_MeanIntensity_Nuclear",
    "integrated_intensity": "Intensity_IntegratedIntensity_Nuclear",
    "area_um2": "AreaShape_Area_um2", "perimeter_um": "AreaShape_Perimeter_um",
    "equivalent_diameter_um": "AreaShape_EquivalentDiameter_um",
    "centroid_x_um": "Location_Center_X_um", "centroid_y_um": "Location_Center_Y_um",
    "filename": "FileName_Image", "image": "FileName_Image",
}
PER_CHANNEL = {"mean_intensity_": "Intensity_MeanIntensity_", "integrated_intensity_": "Intensity_IntegratedIntensity_",
               "max_intensity_": "Intensity_MaxIntensity_"}


def cellprofiler_name(column: str, has_image_number: bool = False) -> str:
    """One column's CellProfiler name. The image id becomes ImageNumber unless the table has its own number;
    metadata (condition, well, free keys) becomes Metadata_<Name>."""
    if column in FIXED:
        return FIXED[column]
    if column == "image_id":
        return "Metadata_ImageID" if has_image_number else "ImageNumber"
    for prefix, renamed in PER_CHANNEL.items():
        if column.startswith(prefix):
            return renamed + column[len(prefix):]
    return "Metadata_" + "".join(part[:1].upper() + part[1:] for part in re.split(r"_+", column) if part)


def rename_columns(columns: list[str], style: str = "cellprofiler") -> list[str]:
    """A table's column names in `style` (native: unchanged). Names stay unique."""
    if style not in STYLES:
        raise ValueError(f"column style must be one of {', '.join(STYLES)}, not {style!r}")
    if style == "native":
        return list(columns)
    has_number = "image_number" in columns
    renamed, seen = [], set()
    for column in columns:
        name = cellprofiler_name(column, has_number)
        while name in seen:
            name += "_"
        seen.add(name)
        renamed.append(name)
    return renamed


def rename_csv_header(table: str, style: str = "cellprofiler") -> str:
    """A CSV table (as shared.domain.outputs.nuclei_csv writes it) with its header row in `style`."""
    import csv
    import io

    header, _, body = table.partition("\n")
    columns = next(csv.reader([header]))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(rename_columns(columns, style))
    return buffer.getvalue() + body


def rename_table(columns: list[str], types: dict[str, str], style: str) -> tuple[list[str], dict[str, str]]:
    """A streamed table's column names and their types (keyed by name) in `style`."""
    renamed = rename_columns(columns, style)
    return renamed, {new: types[old] for old, new in zip(columns, renamed)}
