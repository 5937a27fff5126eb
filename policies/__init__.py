"""Pure decision code: forecasting, scenario policies, HPA behavior, pool split, baselines.

No I/O, no clock: time is an argument. Everything works on arrays over workloads.
"""
