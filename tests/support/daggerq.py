"""The one check that reaches into the SDK: with no `dagger` CLI on these machines, the type
definitions the engine registers when it loads the module are generated here, offline, the
way the SDK's runtime does (the engine tier then runs every function for real)."""

from __future__ import annotations

from typing import Any, cast

import anyio
from dagger.mod._module import Module
from wasm_sysexts.main import WasmSysexts


def module() -> Module:
    # @object_type sets __dagger_module__ at runtime; mypy does not see that decorator act.
    mod: Module = cast(Any, WasmSysexts).__dagger_module__
    return mod


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
