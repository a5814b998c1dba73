"""sr-platform: PostgreSQL storage, loading and Dagster orchestration for S/R events."""
