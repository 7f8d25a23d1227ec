"""imagekit's benchmarks: ``python -m bench [names...]`` (see ``bench._common`` for the API).

Each module ``bench/<name>.py`` with a ``run(args) -> list[Row]`` is a bench; every figure
is compared with a baseline measured in the same run.
"""
