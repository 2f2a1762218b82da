"""Test contracts for the local EVM chain (anvil), written in Vyper and compiled here.

- ``TestUSDC.vy``: a 6-decimal ERC-20 like USDC (transfer, transferFrom, approve, Transfer events) with an open mint.
- ``TestAggregator.vy``: a Chainlink-compatible feed (``latestRoundData``, ``decimals``) with a settable answer and
  ``updatedAt``.
- ``TestContractWallet.vy``: a smart-contract wallet whose ERC-1271 ``isValidSignature`` accepts its owner key's
  signature of the hash.
- ``TestBatchPay.vy``: pays several amounts of an ERC-20 in one transaction (``transferFrom`` each: one Transfer log
  per amount) - a transaction with several credits to the merchant.

Their ABI and bytecode are committed next to them (``<Name>.json``), so tests, the benchmark and the demo deploy them
without a compiler; ``tests/unit/test_crypto_evm_contracts.py`` recompiles the sources and requires the committed
bytecode (they cannot drift). After editing a source: ``python -m kilo_dev.contracts`` rewrites the JSON files.
"""

from __future__ import annotations

import decimal
import json
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
CONTRACTS: Final = ("TestUSDC", "TestAggregator", "TestContractWallet", "TestBatchPay")


def compile_source(name: str) -> dict[str, Any]:
    """Compile ``<name>.vy`` with the pinned vyper: ``{"abi": [...], "bytecode": "0x..."}`` (deployment bytecode).

    Importing vyper replaces the thread's decimal context with its own (78 digits, and refusing any lower precision),
    which every later Decimal of the process would inherit: the caller's context is put back after the import, and
    vyper compiles in a context of its own."""
    saved = decimal.getcontext()
    try:
        import vyper  # type: ignore[import-untyped]  # noqa: PLC0415 - a dev dependency, loaded only to compile
        from vyper.utils import DecimalContextOverride  # type: ignore[import-untyped]  # noqa: PLC0415
    finally:
        decimal.setcontext(saved)

    source = (HERE / f"{name}.vy").read_text()
    with decimal.localcontext(DecimalContextOverride(prec=78)):
        out = vyper.compile_code(source, contract_path=f"{name}.vy", output_formats=["abi", "bytecode"])
    return {"compiler": f"vyper {vyper.__version__}", "abi": out["abi"], "bytecode": out["bytecode"]}


def load(name: str) -> dict[str, Any]:
    """The committed ABI and bytecode of a test contract."""
    data: dict[str, Any] = json.loads((HERE / f"{name}.json").read_text())
    return data


def main() -> None:
    for name in CONTRACTS:
        compiled = compile_source(name)
        (HERE / f"{name}.json").write_text(json.dumps(compiled, indent=1) + "\n")
        print(f"{name}.json: {len(compiled['bytecode']) // 2 - 1} bytes, {compiled['compiler']}")


if __name__ == "__main__":
    main()
