"""VMs for the smoke test: the QEMU harness, the Debian reference VM and Flatcar, Ignition."""
