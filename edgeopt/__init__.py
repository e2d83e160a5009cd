"""edgeopt: export, prune, quantize, profile and gate models for edge hardware."""

__version__ = "0.1.0"
