"""sttwatch: watch folders for recordings and write their transcripts beside them."""

__version__ = "0.1.0"
