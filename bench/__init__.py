"""``make bench``: figures measured in one run, printed as one table (bench/out/results.md)."""
