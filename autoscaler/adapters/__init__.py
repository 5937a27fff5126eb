"""Adapters at the edges: the loop's Protocols implemented over real backends.

`autoscaler.adapters.prometheus.PrometheusMetricsSource` implements `MetricsSource` over the
Prometheus HTTP API.
"""
