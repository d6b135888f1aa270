"""errors.py's drawn tree is the code's: every error batchgen raises on purpose, each under its parent."""

from __future__ import annotations

import importlib
import pkgutil
import re

import batchgen
from batchgen import errors
from batchgen.errors import BatchgenError

# A branch of the drawing: four spaces, then "│   " or "    " per level above, then the branch.
_BRANCH = re.compile(r"    (?P<levels>(?:│   |    )*)[├└]── (?P<name>[A-Z]\w+)\b.*")


def drawn_tree() -> dict[str, str | None]:
    """Each class the docstring draws, mapped to the class drawn as its parent."""
    parents: dict[str, str | None] = {"BatchgenError": None}
    path = ["BatchgenError"]  # the classes drawn above the current line, root first
    for line in (errors.__doc__ or "").splitlines():
        branch = _BRANCH.fullmatch(line)
        if branch is None:
            continue  # the root, a continuation line, or prose
        depth = len(branch.group("levels")) // 4 + 1
        del path[depth:]
        parents[branch.group("name")] = path[-1]
        path.append(branch.group("name"))
    return parents


def every_error() -> set[type[BatchgenError]]:
    """Every BatchgenError subclass the package defines, with every module imported."""
    for module in pkgutil.walk_packages(batchgen.__path__, "batchgen."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: set[type[BatchgenError]] = set()
    todo: list[type[BatchgenError]] = [BatchgenError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_drawing_is_the_class_tree() -> None:
    """Each class drawn exists in errors.py with the drawn parent, and each class there is drawn."""
    drawn = drawn_tree()
    actual = {
        cls.__name__: next((b.__name__ for b in cls.__bases__ if issubclass(b, BatchgenError)), None)
        for cls in every_error()
    }
    assert drawn == actual
    assert {"TemplateError", "ParamsInvalid", "HistoryUnavailable"} <= set(drawn)


def test_every_error_is_defined_in_errors_py() -> None:
    """No module defines an error of its own outside the tree: all live in batchgen.errors."""
    assert {cls.__module__ for cls in every_error()} == {"batchgen.errors"}
