"""dispatch: a newsletter distributor for intelligence briefings (SITREPs)."""

__version__ = "0.1.0"
