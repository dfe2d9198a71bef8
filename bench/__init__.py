"""Reproducible benchmarks: the raw JetStream limit, a hand-made task cycle, and the asyncjobs library."""
