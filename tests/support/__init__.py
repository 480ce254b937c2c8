"""Shared test helpers: a local upstream mirror, real Wasm payloads, CLI runners."""
