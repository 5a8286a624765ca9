"""The project's import graph (every `import` in the package sources, including those inside
functions, read with `ast`): no cycles, configs are leaves that no library module imports,
and no module imports another module's private name. The folders installed under srwm_jax
(kernels/, fewshot/, rl/) are imported as `srwm_jax.kernels...` and so on: those names are
mapped to the folders, so the op -> kernel calls are edges of the graph."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("srwm_jax", "kernels", "fewshot", "rl", "configs")
LIBRARIES = ("srwm_jax", "kernels", "fewshot", "rl")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


# pyproject's package-dir: the import name prefix -> the repository folder it is
INSTALLED_AS = {"srwm_jax.kernels": "kernels", "srwm_jax.fewshot": "fewshot", "srwm_jax.rl": "rl"}


def folder_name(module: str) -> str:
    """`srwm_jax.kernels.srwm.ops` -> `kernels.srwm.ops` (the module's file under the repo)."""
    for prefix, folder in INSTALLED_AS.items():
        if module == prefix or module.startswith(prefix + "."):
            return folder + module[len(prefix):]
    return module


def imports_of(name: str, path: Path, modules) -> list[tuple[str, str | None]]:
    """[(imported project module, imported name or None)] of one source file."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(folder_name(a.name), None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = folder_name(node.module or "")
            if node.level:  # relative: from the package holding this module
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = folder_name(f"{base}.{a.name}")
                out.append((sub, None) if sub in modules else (base, a.name))
    return [(m, n) for m, n in out if m.split(".")[0] in PACKAGES]


def graph():
    modules = project_modules()
    return modules, {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(edges):
    """A list of modules forming a cycle, or None (iterative DFS, white/grey/black)."""
    state, stack_path = {}, []

    def visit(start):
        stack = [(start, iter(edges.get(start, ())))]
        state[start] = "grey"
        stack_path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "black"
                stack_path.pop()
                stack.pop()
            elif state.get(child) == "grey":
                return stack_path[stack_path.index(child):] + [child]
            elif child not in state:
                state[child] = "grey"
                stack_path.append(child)
                stack.append((child, iter(edges.get(child, ()))))
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_import_graph_has_no_cycles():
    modules, imports = graph()
    edges = {m: sorted({t for t, _ in targets if t in modules and t != m})
             for m, targets in imports.items()}
    assert len(edges) > 40  # the walk found the packages
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_no_library_module_imports_configs():
    _, imports = graph()
    offenders = sorted(m for m, targets in imports.items() if m.split(".")[0] in LIBRARIES
                       and any(t.split(".")[0] == "configs" for t, _ in targets))
    assert offenders == []


def test_no_module_imports_a_private_name_of_another():
    _, imports = graph()
    offenders = sorted((m, f"{t}.{n}") for m, targets in imports.items() for t, n in targets
                       if n and n.startswith("_") and not n.startswith("__") and t != m)
    assert offenders == []


def test_the_ops_call_into_their_kernels_is_an_edge():
    """The public ops import their kernels by the one name `srwm_jax.kernels` (plain imports
    a reader can follow); the graph sees those edges, and the kernels' own import of the scan
    path (for second derivatives) goes to the scan modules, not back to the ops."""
    _, imports = graph()
    targets = {m: {t for t, _ in ts} for m, ts in imports.items()}
    assert "kernels" in targets["srwm_jax.ops.srwm"]
    assert "kernels" in targets["srwm_jax.ops.delta_rule"]
    assert "srwm_jax.ops.srwm_scan" in targets["kernels.srwm.ops"]
    assert "srwm_jax.ops.delta_rule_scan" in targets["kernels.delta_rule.ops"]
    assert not any(t.startswith("srwm_jax.kernels") for ts in targets.values() for t in ts)
