"""Persistence: every table, its schema and migrations, and the SQL that reads and writes them.

`database.Store` holds the models, groups and saved state; `ledger` the usage rows; `profiles` the
measured profiles; `schema` the migrations of all of them. Nothing above this layer writes SQL.
"""
