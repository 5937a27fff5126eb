"""Generated from ../externalscaler.proto by `python -m autoscaler.keda.regen`."""
