"""Cancel thanks.io orders in bulk and report the refunded credits exactly."""

__version__ = "0.1.0"
