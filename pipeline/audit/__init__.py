"""audit: match every image's SBOM against OSV advisories, apply waivers, gate the release."""
