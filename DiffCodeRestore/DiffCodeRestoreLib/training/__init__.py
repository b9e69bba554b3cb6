"""Training of the DiffCode model (dev-only: not shipped in the Slicer extension)."""
