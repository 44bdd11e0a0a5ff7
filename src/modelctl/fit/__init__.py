"""Fit: the machine (`hardware`), GGUF headers (`gguf_meta`), the catalog, and memory estimates
and recommendations built on them (`estimate`)."""
