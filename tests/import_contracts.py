"""An import-linter contract type: no import cycles between modules.

import-linter's own ``acyclic_siblings`` works on packages, and the package is laid out by
feature with a pure part and an I/O part side by side (``consent.rules`` beside
``consent.ops``), so a package-level rule would forbid ``storage → consent.rules`` while
``consent.ops → storage`` is the intended direction. What must never happen is a cycle of
modules: it makes import order matter and hides which side owns the code. This contract
finds every strongly connected component of the module graph (imports under
``TYPE_CHECKING`` are left out by the configuration) and reports each.
"""

from __future__ import annotations

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class AcyclicModulesContract(Contract):
    """Modules under ``root`` import each other without cycles."""

    type_name = "acyclic_modules"

    root = fields.StringField()

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        root = str(self.root)  # type: ignore[attr-defined]
        modules = sorted(m for m in graph.modules if m == root or m.startswith(root + "."))
        cycles = _cycles(graph, modules)
        return ContractCheck(kept=not cycles, warnings=[], metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"Import cycle between {len(cycle)} modules:")
            for module in cycle:
                output.print_error(f"- {module}")
            output.new_line()


def _cycles(graph: grimp.ImportGraph, modules: list[str]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), keeping those of two or more."""
    inside = set(modules)

    def imported(module: str) -> list[str]:
        return sorted(graph.find_modules_directly_imported_by(module) & inside)

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in modules:
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, imported(start)))
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, imported(nxt)))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found
