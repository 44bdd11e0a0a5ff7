"""The runtime: the scheduler (loads and unloads within a memory budget), its events, and the
request path that holds a loaded model for a request and meters it."""
