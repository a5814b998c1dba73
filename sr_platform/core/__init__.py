"""Core library: database access, migrations, partitions. Knows nothing of Dagster or the CLI."""
