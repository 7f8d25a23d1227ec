"""``python -m marketplace_server``: run the registry with uvicorn (httptools, uvloop).

It is ``imagekit serve`` (same options, one declaration); the configuration reaches the
worker processes through one environment variable, so ``--workers N`` works too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._http import CONFIG_ENV as _ENV
from ._http import BoundedHttpToolsProtocol


def default_data_dir() -> Path:
    from imagekit.settings import load_settings

    return load_settings().data_dir


def serve(config: Any, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    values = dataclasses.asdict(config)
    values["data_dir"] = str(config.data_dir)
    values["files_dir"] = str(config.files_dir) if config.files_dir else None
    os.environ[_ENV] = json.dumps(values)
    uvicorn.run(
        "marketplace_server.__main__:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # the C parser (the entry GET is most of the cost otherwise), with header and body
        # deadlines and a header size bound that uvicorn lacks (slowloris)
        http=BoundedHttpToolsProtocol,
        timeout_keep_alive=config.keep_alive_timeout,
        limit_concurrency=config.max_connections,  # then 503, not unbounded memory
        loop="uvloop",
        access_log=False,
        server_header=False,
        log_level="warning",
        proxy_headers=False,
    )


def app_from_env() -> Any:
    from .app import create_app
    from .config import ServerConfig

    values = json.loads(os.environ[_ENV])
    values["data_dir"] = Path(values["data_dir"])
    values["files_dir"] = Path(values["files_dir"]) if values["files_dir"] else None
    values["trust"] = tuple(values["trust"])
    values["vouch"] = tuple(values["vouch"])
    return create_app(ServerConfig(**values))


def main(argv: list[str] | None = None) -> None:
    """The same command as ``imagekit serve`` (its options are declared there, once)."""
    from imagekit.cli import main as imagekit_main

    imagekit_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
