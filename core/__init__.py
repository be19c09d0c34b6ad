"""The layer every deployable shares: settings, clients, the Redis key layout, the storage
formats both sides read and write, the shared rules and the vector-index interface.

Imports only `schemas`; nothing here imports a deployable or the command (import-linter
contracts in pyproject.toml).
"""
