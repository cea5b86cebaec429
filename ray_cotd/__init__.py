"""ray-cotd: Ray-native chain-of-thought distillation (CasCoD, PRADA, granularity search)."""

__version__ = "0.1.0"
