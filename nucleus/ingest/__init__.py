"""`nucleus ingest`: watch an instrument's output folder and upload each finished image once.

A plain HTTP client of the API through `nucleus.client` (requests and the standard library, plus
tifffile for stacking channels): it never imports `services.*` nor touches the database.

- `names`    file-name metadata (plate, well, site, channel, condition) from a regex, and the field
             and channel label of an instrument's per-channel file
- `stacking` one multi-channel OME-TIFF from a field's channel files (--nuclear-channel)
- `scanner`  folder polling and settle detection (a file is ready once unchanged for N seconds)
- `state`    what was sent, in an atomically rewritten JSON file outside the watched folder
- `client`   the API calls, each answer sorted into sent / rejected / retry / fatal
- `console`  a live status line on a terminal, plain log lines otherwise
- `runner`   the loop tying them together
"""
