"""Region-feature extraction with detectron2: images → detector → `RegionFeatures` → store.

Submodules that need only torch and Pillow (`images`, `preprocess`, `selection`,
`boxes_file`) import without detectron2; `detector`, `modules`, `extractor` and `run` need it.
This package itself imports nothing heavy, so the CLI can register its command cheaply.
"""
