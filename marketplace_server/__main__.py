"""``python -m marketplace_server``: run the registry with uvicorn (httptools, uvloop).

The same options as ``imagekit serve``; the configuration reaches the worker processes
through one environment variable, so ``--workers N`` works too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

_ENV = "IMAGEKIT_SERVER_CONFIG"


def default_data_dir() -> Path:
    from imagekit.settings import load_settings

    return load_settings().data_dir


def serve(
    config: Any, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1
) -> None:
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
        http="httptools",  # the C parser: the entry GET is most of the cost otherwise
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
    return create_app(ServerConfig(**values))


def main(argv: list[str] | None = None) -> None:
    from .config import ServerConfig

    parser = argparse.ArgumentParser(prog="python -m marketplace_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db", help="database URL (postgresql://...); default SQLite")
    parser.add_argument("--data-dir", type=Path, help="SQLite database directory")
    parser.add_argument("--trust", action="append", default=[],
                        help="trusted certificates/CRLs (file or dir; repeatable); "
                             "none: accept any valid signature")
    parser.add_argument("--files-dir", type=Path, help="directory served at /files/")
    parser.add_argument("--allow-sha1", action="store_true",
                        help="accept SHA-1 signatures (StratusLab-era entries)")
    args = parser.parse_args(argv)
    config = ServerConfig(
        data_dir=args.data_dir or default_data_dir(),
        db=args.db,
        trust=tuple(args.trust),
        files_dir=args.files_dir,
        allow_sha1=args.allow_sha1,
    )
    print(f"marketplace on http://{args.host}:{args.port} "
          f"({'PostgreSQL' if args.db else config.database_url}; "
          f"{'any valid signature' if config.any_valid_signature else 'trusted endorsers'})",
          file=sys.stderr, flush=True)
    serve(config, host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()
