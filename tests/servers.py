"""Real servers for tests, on 127.0.0.1 only: they die with the test process (PDEATHSIG) and are
killed by PID when the test ends."""

from __future__ import annotations

import contextlib
import ctypes
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server(timeout: float = 30, port: int | None = None) -> Iterator[str]:
    """An S3-compatible server (moto's server mode); yields its plain-http endpoint."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        preexec_fn=_die_with_parent,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        with proc.stderr:
            for line in proc.stderr:
                lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:  # its own "Running on" line says it listens
            line = lines.get(timeout=timeout)
            if line is None:
                raise RuntimeError("moto server exited before listening")
            if "Running on" in line:
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        reader.join(timeout=10)


class DaskCluster:
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(
        self,
        workers: int,
        env: dict[str, str] | None = None,
        *,
        nanny: bool = False,
        threads: int = 1,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = env
        self.nanny = nanny
        """Workers under a nanny (``dask worker``'s default), which starts a new worker process
        when its own is killed or restarted; without one, ``workers`` are the workers' PIDs."""
        self.threads = threads
        """Each worker's threads: above 1, it runs several tasks at once."""
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._count = workers

    def _spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        import os

        env = {**os.environ, **(self.env or {}), **(env or {})}
        return subprocess.Popen(
            list(args),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env=env, start_new_session=True,
        )  # fmt: skip

    def start(self, timeout: float = 60) -> DaskCluster:
        from pathlib import Path

        dask = str(Path(sys.executable).with_name("dask"))
        self.scheduler = self._spawn(
            dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"
        )
        for n in range(self._count):
            self.add_worker(f"w{n}")
        if self._count:  # none: the caller adds its own
            self.wait_for_workers(self._count, timeout)
        return self

    def add_worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """One more worker; ``env``: its own environment on top of the cluster's."""
        from pathlib import Path

        dask = str(Path(sys.executable).with_name("dask"))
        worker = self._spawn(
            dask, "worker", f"tcp://{self.address}", "--name", name, "--nworkers", "1",
            "--nthreads", str(self.threads), "--no-dashboard", "--host", "127.0.0.1",
            *(() if self.nanny else ("--no-nanny",)), env=env,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(f"tcp://{self.address}", timeout=timeout) as client:
            client.wait_for_workers(count, timeout=timeout)

    def close(self) -> None:
        import os

        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                # the whole session: a nanny's worker process is its child, not ours
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextmanager
def dask_cluster(
    workers: int = 2, env: dict[str, str] | None = None, *, nanny: bool = False, threads: int = 1
) -> Iterator[DaskCluster]:
    cluster = DaskCluster(workers, env, nanny=nanny, threads=threads)
    try:
        yield cluster.start()
    finally:
        cluster.close()


@contextmanager
def moto_bucket(name: str) -> Iterator[tuple[str, Any]]:
    """A moto server with one empty bucket: its endpoint and a boto3 client for it."""
    import boto3

    with moto_server() as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        yield endpoint, client
