"""The project's OSV advisory feed and waivers, shipped as package data (pipeline.advisories);
see docs/advisories.md."""
