"""Offline inspection of the Dagger module: no engine runs here, but the decorated class
carries the type definitions the engine would register."""

from __future__ import annotations

from typing import Any

import anyio
from dagger.mod._module import Module
from wasm_sysexts.main import WasmSysexts


def module() -> Module:
    mod: Module = WasmSysexts.__dagger_module__
    return mod


def functions() -> dict[str, Any]:
    """API name -> the SDK's function definition (return_type, parameters, cache_policy)."""
    return dict(module()._objects["WasmSysexts"].functions)


def register_typedefs() -> BaseException:
    """Generate the module's type definitions; returns the error that stopped it.

    Every type is converted before the final request, so reaching the connection error
    (and nothing else) proves the definitions register."""
    mod = module()
    # The runtime names the main object through DAGGER_MAIN_OBJECT before import; same here.
    mod._main_name = "WasmSysexts"
    mod._main = mod._objects["WasmSysexts"]
    try:
        anyio.run(mod._typedefs)
    except BaseException as err:  # the caller asserts which error it was
        return err
    raise AssertionError("typedefs generated without an engine: expected a connection error")
