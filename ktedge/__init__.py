"""ktedge: ship face models to phones (your own, or ktedge's knowledge-token models)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "deploy":  # the notebook API, imported on first use: `import ktedge` stays light
        from ktedge.api import deploy

        return deploy
    raise AttributeError(f"module 'ktedge' has no attribute {name!r}")
