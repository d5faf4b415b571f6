"""edgeblur: real-time face and licence-plate anonymization for camera streams and files."""

__version__ = "0.1.0"
