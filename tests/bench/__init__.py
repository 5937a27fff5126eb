"""Benchmarks: print measured figures; assert only loose sanity bounds."""
