"""Between image and sign: what an image is made of (an SPDX SBOM, written by build) and how
it was made (an in-toto SLSA provenance statement, signed in a DSSE envelope by sign)."""
