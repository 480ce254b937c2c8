"""Public keys, shipped as package data (pipeline.keys); see README.md here."""
