"""ktedge: ship knowledge-token face models to phones."""

__version__ = "0.1.0"
