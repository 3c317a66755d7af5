"""Quality benchmarks: accuracy of a target (``qa``: questions with reference answers)."""
