"""Dagger module for wasm-sysexts: build, sign, test and publish Wasm runtime sysexts."""

from .main import WasmSysexts as WasmSysexts
