"""Contract artifacts (Aave's hardhat JSON, our solc-js output) and a small ABI codec.

The devnet set-up encodes thousands of calls; eth_abi straight from the ABI JSON is fast and
keeps web3.py's contract machinery out of the loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector

from keeperd.devnet import paths
from keeperd.devnet.client import DevnetClient


def _abi_type(param: dict[str, Any]) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){t[5:]}"
    return t


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    link_references: dict[str, dict[str, list[dict[str, int]]]]

    def function(self, name: str, arity: int | None = None) -> dict[str, Any]:
        matches = [e for e in self.abi if e.get("type") == "function" and e["name"] == name
                   and (arity is None or len(e["inputs"]) == arity)]
        if len(matches) != 1:
            raise KeyError(f"{self.name}.{name} with {arity} args: {len(matches)} matches")
        return matches[0]

    def encode_call(self, name: str, *args: Any) -> bytes:
        entry = self.function(name, len(args))
        types = [_abi_type(i) for i in entry["inputs"]]
        sig = f"{name}({','.join(types)})"
        return function_signature_to_4byte_selector(sig) + encode(types, list(args))

    def decode_result(self, name: str, data: bytes, arity: int | None = None) -> tuple[Any, ...]:
        entry = self.function(name, arity)
        return tuple(decode([_abi_type(o) for o in entry["outputs"]], data))

    def deploy_data(self, *args: Any, libraries: dict[str, str] | None = None) -> bytes:
        code = link(self.bytecode, self.link_references, libraries or {})
        ctor = next((e for e in self.abi if e.get("type") == "constructor"), None)
        encoded = b""
        if ctor is not None and ctor["inputs"]:
            encoded = encode([_abi_type(i) for i in ctor["inputs"]], list(args))
        elif args:
            raise TypeError(f"{self.name} takes no constructor arguments")
        return bytes.fromhex(code.removeprefix("0x")) + encoded

    @property
    def library_names(self) -> list[str]:
        return [lib for libs in self.link_references.values() for lib in libs]


def link(bytecode: str, link_references: dict[str, dict[str, list[dict[str, int]]]],
         libraries: dict[str, str]) -> str:
    """Write library addresses into the placeholders hardhat/solc leave in the bytecode."""
    code = bytecode.removeprefix("0x")
    for libs in link_references.values():
        for lib, places in libs.items():
            if lib not in libraries:
                raise KeyError(f"library {lib} is not deployed yet")
            addr = libraries[lib].removeprefix("0x").lower()
            for place in places:
                start = 2 * place["start"]
                code = code[:start] + addr + code[start + 2 * place["length"]:]
    if "__" in code:
        raise ValueError("unlinked library placeholder left in bytecode")
    return "0x" + code


@cache
def _aave_index() -> dict[str, str]:
    root = paths.aave_artifacts()
    index: dict[str, str] = {}
    for f in root.rglob("*.json"):
        if f.name.endswith(".dbg.json") or f.parent.name == "build-info":
            continue
        index.setdefault(f.stem, str(f))
    return index


@cache
def aave(name: str) -> Artifact:
    """An artifact of the pinned @aave/core-v3 package by contract name (e.g. "Pool")."""
    try:
        path = _aave_index()[name]
    except KeyError:
        raise KeyError(f"no @aave/core-v3 artifact named {name}") from None
    with open(path) as f:
        data = json.load(f)
    return Artifact(name, data["abi"], data["bytecode"], data.get("linkReferences", {}))


def from_compiled(name: str, abi: list[dict[str, Any]], bytecode: str) -> Artifact:
    return Artifact(name, abi, bytecode, {})


@dataclass(frozen=True)
class Deployer:
    """Deploys, calls and reads contracts as one sender (the devnet's admin), straight-line."""

    client: DevnetClient
    sender: str

    def deploy(self, artifact: Artifact, *args: Any,
               libraries: dict[str, str] | None = None) -> str:
        return self.client.deploy(self.sender, artifact.deploy_data(*args, libraries=libraries))

    def call(self, target: str, artifact: Artifact, fn: str, *args: Any) -> None:
        self.client.send(self.sender, target, artifact.encode_call(fn, *args))

    def read(self, target: str, artifact: Artifact, fn: str, *args: Any) -> tuple[Any, ...]:
        return artifact.decode_result(
            fn, self.client.eth_call(target, artifact.encode_call(fn, *args)), len(args))
