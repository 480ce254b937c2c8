"""Step 5, signing: keys, OpenPGP-signed SHA256SUMS, verity-signed DDIs, and verification."""
