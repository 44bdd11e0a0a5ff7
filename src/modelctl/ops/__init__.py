"""Operations: sync, install and remove, profiling, capabilities, connectors, single-model
servers, the demo model, the doctor and the management API's client. Each takes the narrow
parts it uses (a registry, a catalog, a backend, a function to run a request), never the manager.
"""
