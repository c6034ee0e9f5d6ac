"""Starting or joining Ray for ``stats --engine ray``, with one-line reasons when it cannot.

Joining a cluster by ``HOST:PORT`` fails in two ways that Ray itself reports badly:

- Nothing listens there: ``ray.init`` retries for minutes (20 attempts of a 40 s RPC timeout).
  A plain TCP connect answers in milliseconds.
- The cluster requires token authentication (Ray 2.52+; ``ray start --head`` turns it on when it
  finds a token, e.g. the ``~/.ray/auth_token`` that a local ``ray.init`` creates since Ray 2.59)
  and this process has none, or another: ``ray.init`` logs an ``InvalidAuthToken`` warning
  every second for 20 s, then raises "Failed to connect". Ray never turns token mode on by itself
  for an explicit address, so ``RAY_AUTH_MODE=token`` and the token must be set (docs/ray.md).
  One call of the client ``ray.init`` uses (``GcsClient``) tells it at once; its warning line is
  silenced.

The probe uses two of Ray's private names (``ray._raylet.GcsClient``, ``AuthenticationTokenLoader``);
where a Ray version lacks them the probe is skipped and ``ray.init`` reports as it does.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
CONNECT_TIMEOUT_S = 5.0
DOCS = "docs/ray.md"
TOKEN_SOURCES = ("the cluster's token (`ray get-auth-token` on the head prints it) in RAY_AUTH_TOKEN, in a file "
                 "named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")


class RayUnavailable(ValueError):
    """Ray Data is not installed, or Ray cannot be started or joined (a usage error: exit 2)."""


@contextlib.contextmanager
def ray_session(ray: Any, address: str | None, cpus: int | None) -> Iterator[None]:
    """Join ``address`` or start a local Ray (quiet); shut down only what this call started.

    Args:
        ray: The ``ray`` module.
        address: ``HOST:PORT`` of a head, ``auto``, ``ray://HOST:10001``; None starts a local Ray.
        cpus: CPUs of a local Ray (None: all); ignored with ``address``.

    Raises:
        RayUnavailable: one line naming the reason and the fix.
    """
    if ray.is_initialized():
        yield
        return
    if address:
        check_cluster(address)
    try:
        ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR", configure_logging=True)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError or a RayError, by version and cause
        if address and _mentions_authentication(exc):
            raise RayUnavailable(_refused_message(address)) from None
        where = f"join Ray at {address}" if address else "start a local Ray"
        raise RayUnavailable(f"cannot {where}: {_first_line(exc)}") from None
    for name in ("ray", "ray.data"):  # Ray's INFO lines would drown the summary; its errors still show
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def check_cluster(address: str) -> None:
    """Fail at once, in one line, where joining ``address`` cannot work (nothing there, or no valid token).

    Only ``HOST:PORT`` addresses are probed (``auto`` and ``ray://`` go to ``ray.init`` as they are).

    Args:
        address: The ``--ray-address`` given.

    Raises:
        RayUnavailable: nothing answers there, or the cluster refuses this process's token (or lack of one).
    """
    host, port = _host_port(address)
    if host is None:
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayUnavailable(f"cannot join Ray at {address}: nothing answers there ({reason}); check the address, "
                             f"or start the head with `ray start --head --port {port}`") from None
    _check_token(address)


def _check_token(address: str) -> None:
    try:  # Ray 2.52+ (token authentication); private names, so looked up rather than imported
        from ray.exceptions import AuthenticationError

        raylet = importlib.import_module("ray._raylet")
        gcs_client, token_loader = raylet.GcsClient, raylet.AuthenticationTokenLoader
    except (ImportError, AttributeError):
        return
    token_mode = os.environ.get(AUTH_MODE_VARIABLE, "").lower() == "token"
    if token_mode:
        # Without a token the client aborts the process (a fatal check in Ray's C++), so look first.
        try:
            has_token = token_loader.instance().has_token(ignore_auth_mode=True)
        except AuthenticationError as exc:  # e.g. RAY_AUTH_TOKEN_PATH names a file that cannot be read
            raise RayUnavailable(f"cannot join Ray at {address}: {getattr(exc, 'message', exc)}; "
                                 f"give {TOKEN_SOURCES} ({DOCS})") from None
        if not has_token:
            raise RayUnavailable(f"cannot join Ray at {address}: {AUTH_MODE_VARIABLE}=token but no token is set; "
                                 f"give {TOKEN_SOURCES} ({DOCS})")
    with _stderr_silenced():  # the C++ client logs a refusal as a warning line of its own
        try:
            gcs_client(address=address)
        except AuthenticationError:
            refused = True
        except Exception:  # anything else: ray.init says what
            refused = False
        else:
            refused = False
    if refused:
        raise RayUnavailable(_refused_message(address))


def _refused_message(address: str) -> str:
    if os.environ.get(AUTH_MODE_VARIABLE, "").lower() == "token":
        return f"cannot join Ray at {address}: the cluster refused this token; give {TOKEN_SOURCES} ({DOCS})"
    return (f"cannot join Ray at {address}: the cluster requires token authentication; set "
            f"{AUTH_MODE_VARIABLE}=token and give {TOKEN_SOURCES} ({DOCS})")


def _host_port(address: str) -> tuple[str | None, int]:
    """(host, port) of a ``HOST:PORT`` address; (None, 0) for anything else."""
    if "://" in address:
        return None, 0
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None, 0
    return host.strip("[]"), int(port)  # [::1]:6379 -> ::1


def _mentions_authentication(exc: BaseException) -> bool:
    """Whether ``exc`` or its causes say that the cluster refused the token (Ray chains and formats them)."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 (where Ray's C++ code logs) to /dev/null for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
