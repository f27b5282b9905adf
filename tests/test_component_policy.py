"""``wasm_engine`` in the host's policy: the sandbox engine chosen by configuration, checked like every field.

No component is built here (that is ``test_component.py``'s): these check the
policy and that a host hands its choice to the backends it makes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pluginsdk import ConfigError, Host, Policy

from .plugin_factory import install_plugin
from .textkit import SPEC


def test_default_is_unset_and_leaves_the_choice_to_the_environment() -> None:
    assert Policy().wasm_engine is None


@pytest.mark.parametrize("engine", ["interpreter", "component"])
def test_each_engine_is_accepted(engine: str) -> None:
    assert Policy(wasm_engine=engine).wasm_engine == engine
    assert Policy().replace(wasm_engine=engine) == Policy(wasm_engine=engine)


def test_an_unknown_engine_is_refused_naming_the_engines() -> None:
    with pytest.raises(ValueError, match="wasm_engine must be one of interpreter, component, not 'fast'"):
        Policy(wasm_engine="fast")


def test_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('[policy]\nwasm_engine = "component"\n')
    assert Policy.from_toml(path).wasm_engine == "component"
    path.write_text('[policy]\nwasm_engine = "turbo"\n')
    with pytest.raises(ConfigError, match="wasm_engine must be one of") as info:
        Policy.from_toml(path)
    assert info.value.path == str(path)
    path.write_text("[policy]\nwasm_engine = 3\n")
    with pytest.raises(ConfigError, match="wasm_engine") as info:
        Policy.from_toml(path)
    assert info.value.path == str(path)


def test_the_host_passes_it_to_its_backends(site: Path) -> None:
    install_plugin(site, "boxed", "from pluginsdk import hookimpl\n@hookimpl\ndef transform(text):\n    return text\n")
    for engine in ("component", None):
        with Host(SPEC, policy=Policy(wasm_engine=engine), path=[str(site)]) as host:
            (plugin,) = [p for p in host._plugins.values() if p.candidate.name == "boxed"]
            assert host._target(plugin).options.wasm_engine == engine
