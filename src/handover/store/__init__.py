"""PostgreSQL storage: the only package that holds SQL.

`db` opens the pool (embedded or by DSN) and runs migrations; one module per
aggregate holds that aggregate's queries.
"""
