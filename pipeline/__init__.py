"""wasm-sysexts: WebAssembly runtimes as reproducible, signed systemd-sysext images."""

__version__ = "0.1.0"
