"""Step 7, publishing: a static tree for systemd-sysupdate, and OCI artifacts."""
