"""HTTP views, one module per resource; each exposes a VIEWS tuple."""
