"""The record: what a model is (`Model`, its kinds), how people name one, units, and every error.

The lowest layer: it imports nothing else of modelctl's, so anything may import it.
"""
