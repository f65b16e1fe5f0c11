"""The exception tree drawn in gateway/errors.py is the one the code defines."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys

import gateway
from gateway import errors


def every_module() -> None:
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def drawn_tree() -> dict[str, str]:
    """``class name -> parent name`` as the docstring draws it."""
    doc = errors.__doc__ or ""
    block = doc[doc.index("GatewayError\n") : doc.index("\n\n", doc.index("GatewayError\n"))]
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        found = re.search(r"(?:├── |└── )?([A-Z]\w+)", line)
        assert found is not None, line
        depth = found.start(1)
        name = found.group(1)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def subclasses(cls: type[BaseException]) -> list[type[BaseException]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(subclasses(sub))
    return found


def test_the_docstring_draws_every_public_gateway_error_with_its_parent() -> None:
    every_module()
    defined = {
        cls.__name__: cls.__bases__[0].__name__
        for cls in subclasses(errors.GatewayError)
        if cls.__module__.startswith("gateway.") and not cls.__name__.startswith("_")
    }
    assert drawn_tree() == defined


def test_every_other_exception_class_is_named_outside_the_tree() -> None:
    every_module()
    doc = errors.__doc__ or ""
    outside = " ".join(doc[doc.index("Outside the tree") :].split()).replace(". ", ".")
    others = sorted(
        {
            (module.__name__.removeprefix("gateway."), obj.__name__)
            for module in list(sys.modules.values())
            if module.__name__.startswith("gateway.")
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj.__module__ == module.__name__
            and not issubclass(obj, errors.GatewayError)
        }
    )
    assert others  # the walk found the module-private ones at least
    # A public class is named with its module, so the drawing says where it lives.
    unnamed = [
        f"{where}.{name}"
        for where, name in others
        if (name if name.startswith("_") else f"``{where}.{name}``") not in outside
    ]
    assert unnamed == []
