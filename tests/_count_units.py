"""Imported by the concurrent-study test's ``deepgeom study`` processes: counts every unit computation
(trainings and built-in analyses) by appending one line to ``$DEEPGEOM_COUNT_FILE`` (O_APPEND: one
``write`` per line, so lines of concurrent processes never interleave)."""

from __future__ import annotations

import dataclasses
import os

from deepgeom.studies import registry, training


def _count(kind: str, key: str) -> None:
    fd = os.open(os.environ["DEEPGEOM_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {key} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


_train_run = training.train_run


def _counting_train_run(run, out_dir):
    _count("train", run.key)
    return _train_run(run, out_dir)


training.train_run = _counting_train_run
for _name, _a in registry.analyses().items():
    def _wrap(func, name=_name):
        def counted(ctx):
            _count(name, ctx.run.key if ctx.run is not None else "study")
            return func(ctx)
        return counted

    registry._REGISTRY[_name] = dataclasses.replace(_a, func=_wrap(_a.func))
