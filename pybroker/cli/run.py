"""``pybroker run`` and ``pybroker stop``.

``run`` starts one broker node in the foreground:

* ``--config PATH``: that broker.xml; otherwise the instance's ``etc/broker.xml`` (the instance is
  ``$PYBROKER_INSTANCE``, set by an instance's ``bin/pybroker`` launcher, or ``--instance``);
  otherwise the embedded default configuration (acceptor on localhost:61616, data in ./data).
* Logs go to the console and, in an instance, to ``log/artemis.log``.
* SIGINT/SIGTERM stop gracefully (with the configured ``failover-on-shutdown``); a second signal
  exits at once. ``pybroker stop`` creates ``etc/STOP_ME``, which the broker polls for (as
  Artemis does) and deletes.

Exit codes: 0 clean stop, 1 internal error (or a lost shared-store lock), 2 configuration error,
3 a shared-store lock not obtained within ``journal-lock-acquisition-timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from pybroker.errors import ConfigError, LockTimeoutError, PyBrokerError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_LOCK_TIMEOUT = 3

LOG_FORMAT = "%(asctime)s %(levelname)-5s [%(name)s] %(message)s"
STOP_FILE = "STOP_ME"


def instance_dir(option: str | None) -> Path | None:
    """The broker instance directory: ``--instance``, else ``$PYBROKER_INSTANCE``."""
    value = option or os.environ.get("PYBROKER_INSTANCE")
    return Path(value).resolve() if value else None


def setup_logging(log_dir: Path | None, *, level: str = "INFO") -> None:
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(console)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_dir / "artemis.log", maxBytes=50 * 1024 * 1024, backupCount=5
        )
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(file_handler)
    logging.getLogger("proton").setLevel(logging.WARNING)


def _resolve_config(config: str | None, instance: Path | None) -> tuple[Path | None, Path | None]:
    """(broker.xml or None for the default, etc dir or None)."""
    if config is not None:
        path = Path(config).resolve()
        return path, path.parent
    if instance is not None:
        path = instance / "etc" / "broker.xml"
        if not path.exists():
            raise ConfigError(f"instance {instance} has no etc/broker.xml", file=str(path))
        return path, instance / "etc"
    return None, None


async def _serve(config_path: Path | None, etc_dir: Path | None, instance: Path | None) -> int:
    from pybroker.config.parse import default_config
    from pybroker.embedded import Broker

    stop_file = etc_dir / STOP_FILE if etc_dir is not None and instance is not None else None
    if stop_file is not None and stop_file.exists():
        stop_file.unlink()  # a stale request from an earlier run
    if config_path is not None:
        broker = Broker.from_xml(config_path, stop_file=stop_file)
    else:
        broker = Broker(default_config(instance_dir=Path.cwd()), stop_file=stop_file)
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal(signum: int) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            logging.getLogger("pybroker.server").warning("second signal: exiting now")
            os._exit(EXIT_INTERNAL)
        logging.getLogger("pybroker.server").info(
            "AMQ221002-signal: %s received, stopping the broker", signal.Signals(signum).name
        )
        broker.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await broker.start()
    except BaseException:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        raise
    await broker.wait_stopped()
    return broker.exit_code


def _run_loop(coroutine: Any) -> Any:
    """Run on the standard asyncio loop, or on uvloop with ``PYBROKER_LOOP=uvloop`` (when
    installed)."""
    if os.environ.get("PYBROKER_LOOP", "").lower() == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger("pybroker.server").warning("PYBROKER_LOOP=uvloop but uvloop is not installed")
        else:
            return uvloop.run(coroutine)
    return asyncio.run(coroutine)


@click.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="broker.xml to run (default: the instance's etc/broker.xml, else the embedded default)")
@click.option("--instance", "instance_option", type=click.Path(file_okay=False), help="broker instance directory (default: $PYBROKER_INSTANCE)")
@click.option("--log-level", default="INFO", show_default=True, help="logging level")
def run(config: str | None, instance_option: str | None, log_level: str) -> None:
    """Run a broker in the foreground."""
    instance = instance_dir(instance_option)
    setup_logging(instance / "log" if instance is not None else None, level=log_level)
    log = logging.getLogger("pybroker.server")
    try:
        config_path, etc_dir = _resolve_config(config, instance)
        code = _run_loop(_serve(config_path, etc_dir, instance))
    except ConfigError as error:
        log.error("AMQ229072-config: %s", error)
        click.echo(f"pybroker: configuration error: {error}", err=True)
        sys.exit(EXIT_CONFIG)
    except LockTimeoutError as error:
        log.error("AMQ224000: Failure in initialisation: %s", error)
        sys.exit(EXIT_LOCK_TIMEOUT)
    except OSError as error:
        log.error("AMQ224000: Failure in initialisation: %s", error)
        sys.exit(EXIT_INTERNAL)
    except PyBrokerError as error:
        log.error("AMQ224000: Failure in initialisation: %s", error)
        sys.exit(EXIT_INTERNAL)
    except KeyboardInterrupt:
        sys.exit(EXIT_OK)
    except Exception:
        log.exception("AMQ224000: Failure in initialisation")
        sys.exit(EXIT_INTERNAL)
    sys.exit(code)


@click.command()
@click.option("--instance", "instance_option", type=click.Path(file_okay=False), help="broker instance directory (default: $PYBROKER_INSTANCE)")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="the broker.xml of the broker to stop (its folder gets STOP_ME)")
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for the broker to take the request")
def stop(instance_option: str | None, config: str | None, timeout: float) -> None:
    """Stop a running instance (creates etc/STOP_ME, as 'artemis stop' does)."""
    if config is not None:
        etc = Path(config).resolve().parent
    else:
        instance = instance_dir(instance_option)
        if instance is None:
            raise click.UsageError("no instance: run it as <instance>/bin/pybroker stop, or give --instance")
        etc = instance / "etc"
    if not etc.is_dir():
        click.echo(f"pybroker: {etc} is not a directory", err=True)
        sys.exit(EXIT_CONFIG)
    stop_file = etc / STOP_FILE
    stop_file.touch()
    click.echo(f"Stop requested ({stop_file})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not stop_file.exists():
            click.echo("The broker took the stop request.")
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        stop_file.unlink()
    click.echo(f"pybroker: no broker took the request within {timeout:g} s (is it running?)", err=True)
    sys.exit(EXIT_INTERNAL)
