"""A real EVM node for tests, the benchmark and the local stack: Foundry's ``anvil``, installed from npm into a
project-local folder and run on 127.0.0.1 on a free port.

- ``ensure_installed()`` runs ``npm install --prefix .node @foundry-rs/anvil@<pinned>`` once (idempotent: a present
  binary of the pinned version is reused; a file lock keeps parallel pytest workers from installing twice). Nothing is
  installed globally; ``.node/`` is gitignored.
- ``Anvil`` starts the node with a known mnemonic and chain id, waits until it answers ``eth_chainId`` and stops it by
  PID (terminate, then kill). It runs in a session of its own (a Ctrl-C reaches only its starter, which stops it), with
  a watchdog (``processes.guard``) that stops it if the starter dies without doing so (a test run killed mid-way).
  Its output (a log) keeps the start-up only: once it answers, its per-call logging is switched off
  (``anvil_setLoggingEnabled``), so the log does not grow with the calls made to it.
  ``python -m kilo_dev.anvil`` runs one in the foreground (Ctrl-C stops it).

anvil's ``safe``/``finalized`` tags trail the head by one and two epochs (``slots_in_an_epoch``, 32 by default): a
smaller epoch lets tests reach finality by mining a few blocks.

Two settings keep long chains cheap (the 5,000-block downtime test, the benchmark's catch-up): the ``cancun`` hardfork
(from Prague on, every block writes its parent's hash into the EIP-2935 history contract, and anvil's per-block state
copy grows with it: mining the 4,000th block cost ~50x the first) and ``--prune-history`` (only the last
``kept_states`` states in memory, none on disk). Neither changes what the watcher sees: blocks, transactions,
receipts and logs of every height stay available; ``evm_snapshot``/``evm_revert`` and ``anvil_reorg`` still work.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from kilo_dev import processes

ANVIL_VERSION: Final = "1.7.1"
ROOT: Final = Path(__file__).resolve().parents[2]
NODE_DIR: Final = ROOT / ".node"
# anvil's (and Hardhat's) well-known development mnemonic: its first accounts and keys are public test fixtures.
MNEMONIC: Final = "test test test test test test test test test test test junk"
CHAIN_ID: Final = 31337
# The first dev accounts of MNEMONIC (m/44'/60'/0'/0/i), each funded with 10,000 ETH by anvil.
DEV_ACCOUNTS: Final = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
)


_LISTENING: Final = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")


class AnvilError(RuntimeError):
    """anvil could not be installed or started; the message says why."""


def _platform_package() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    system = {"linux": "linux", "darwin": "darwin", "windows": "win32"}.get(platform.system().lower(), "linux")
    return f"anvil-{system}-{arch}"


def binary_path(node_dir: Path = NODE_DIR) -> Path:
    return node_dir / "node_modules" / "@foundry-rs" / _platform_package() / "bin" / "anvil"


def _installed_version(node_dir: Path) -> str | None:
    manifest = node_dir / "node_modules" / "@foundry-rs" / "anvil" / "package.json"
    if not manifest.is_file() or not binary_path(node_dir).is_file():
        return None
    return str(json.loads(manifest.read_text())["version"])


def ensure_installed(node_dir: Path = NODE_DIR) -> Path:
    """The anvil binary, installed into ``node_dir`` by npm if it is not there yet (the pinned version)."""
    if _installed_version(node_dir) == ANVIL_VERSION:
        return binary_path(node_dir)
    npm = shutil.which("npm")
    if npm is None:
        raise AnvilError("npm is not on PATH: install Node.js (npm) to run the EVM tests (anvil comes from npm)")
    node_dir.mkdir(parents=True, exist_ok=True)
    with (node_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest workers: one installs, the others wait and reuse it
        if _installed_version(node_dir) != ANVIL_VERSION:
            result = subprocess.run(  # noqa: S603 - npm from PATH, fixed arguments
                [
                    npm,
                    "install",
                    "--prefix",
                    str(node_dir),
                    "--no-audit",
                    "--no-fund",
                    "--ignore-scripts",  # the binary ships in the platform package; the postinstall is not needed
                    "--fetch-retries=5",  # a registry download cut off mid-file is tried again (npm's default: 2)
                    "--save-exact",
                    f"@foundry-rs/anvil@{ANVIL_VERSION}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or _installed_version(node_dir) != ANVIL_VERSION:
                raise AnvilError(f"npm install @foundry-rs/anvil@{ANVIL_VERSION} failed:\n{result.stderr[-2000:]}")
    return binary_path(node_dir)


def rpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
    """One JSON-RPC call (for fixtures and tools: the product talks to chains through web3.py)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        answer = json.loads(response.read())
    if "error" in answer:
        raise AnvilError(f"{method}: {answer['error']}")
    return answer["result"]


class Anvil:
    """One anvil node on 127.0.0.1, a free port; ``start()`` waits until it answers, ``stop()`` ends it by PID."""

    def __init__(
        self,
        chain_id: int = CHAIN_ID,
        mnemonic: str = MNEMONIC,
        slots_in_an_epoch: int = 32,
        accounts: int = len(DEV_ACCOUNTS),
        log_path: Path | None = None,
        hardfork: str = "cancun",
        kept_states: int = 256,
        timestamp: int | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.mnemonic = mnemonic
        self.slots_in_an_epoch = slots_in_an_epoch
        self.accounts = accounts
        self.log_path = log_path
        self.hardfork = hardfork
        self.kept_states = kept_states
        self.timestamp = timestamp  # the genesis block's time (unix s; None: now); later blocks follow on from it
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._guard: subprocess.Popen[bytes] | None = None  # stops anvil if we die without stopping it
        self._temporary_log: Path | None = None  # anvil's output when no log_path is given (deleted by ``stop``)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 30.0) -> Anvil:
        binary = ensure_installed()
        # anvil binds port 0 (the kernel's choice) and says which port it got: a port picked first and bound by anvil
        # later could be taken meanwhile, and another helper's anvil found there would answer in its place (same
        # chain id). It says so only when not --silent, so its output goes to a file (a temporary one if no log).
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="anvil-", suffix=".log")
            os.close(handle)
            self._temporary_log = log = Path(name)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_path
        self.port = 0
        with log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 - the pinned anvil binary, fixed arguments
                [
                    str(binary),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--chain-id",
                    str(self.chain_id),
                    "--mnemonic",
                    self.mnemonic,
                    "--accounts",
                    str(self.accounts),
                    "--slots-in-an-epoch",
                    str(self.slots_in_an_epoch),
                    "--hardfork",
                    self.hardfork,
                    "--prune-history",
                    str(self.kept_states),
                    *(["--timestamp", str(self.timestamp)] if self.timestamp is not None else []),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._guard = processes.guard(self.process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise AnvilError(f"anvil (pid {self.process.pid}) exited with {self.process.returncode} on start")
            if not self.port and (found := _LISTENING.search(log.read_bytes())):
                self.port = int(found.group(1))
            try:
                if self.port and int(rpc(self.url, "eth_chainId", timeout=1), 16) == self.chain_id:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            self.stop()
            raise AnvilError(f"anvil did not answer within {timeout:.0f}s (its output: {log})")
        # From here on anvil would log every call (its method, each mined block and transaction): the log would grow
        # with the node's use for as long as it runs. Its start-up (with the "Listening on" line read above) stays.
        try:
            rpc(self.url, "anvil_setLoggingEnabled", [False])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        processes.stop(self.process)
        processes.stop(self._guard)
        if self._temporary_log is not None:
            self._temporary_log.unlink(missing_ok=True)
            self._temporary_log = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # conveniences for tests and the demo (anvil's own methods)
    def call(self, method: str, *params: Any) -> Any:
        return rpc(self.url, method, list(params))

    def mine(self, blocks: int = 1) -> None:
        self.call("anvil_mine", hex(blocks))

    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)


def main() -> None:
    node = Anvil().start()
    print(f"anvil {ANVIL_VERSION} on {node.url} (chain id {node.chain_id}, pid {node.pid}); Ctrl-C stops it")
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        while not stopping and node.process is not None and node.process.poll() is None:
            time.sleep(0.5)
    node.stop()


if __name__ == "__main__":
    main()
