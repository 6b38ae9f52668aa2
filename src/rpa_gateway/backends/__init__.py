"""Where robots run: the backend seam and its implementations."""
