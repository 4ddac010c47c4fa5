"""The benchmark: end-to-end throughput and peak memory against a ceiling and baselines."""
