"""Training of the DiffCode model. Shipped in the Slicer extension: adapting to one's scans (``adapt``) is
its stage 2 again; training from scratch also needs the data cache (``data``, development only)."""
