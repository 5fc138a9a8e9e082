"""da: two-stage domain adaptation for remote-sensing scene classification."""

__version__ = "0.1.0"
