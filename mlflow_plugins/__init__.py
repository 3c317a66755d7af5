"""MLflow plugins shipped with benchflow (registered as entry points in pyproject.toml)."""
