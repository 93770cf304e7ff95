"""Speed and efficiency benchmarks: `make bench` / `python -m bench`. Each prints a ratio against a
baseline measured in the same run and writes bench/results.json."""
