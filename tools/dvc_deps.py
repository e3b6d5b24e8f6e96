#!/usr/bin/env python3
"""Each DVC stage's code dependencies and params sections, computed from the code (issue 11, item 2).

    python tools/dvc_deps.py --check      # exit 1 and list every missing / extra dep or params key
    python tools/dvc_deps.py --write      # rewrite those lists in dvc.yaml (comments and the rest kept)
    python tools/dvc_deps.py --show       # each stage's computed code deps and params
    python tools/dvc_deps.py --affected lib/triqdef/quant.py   # the stages a change to that file re-runs

What a stage runs is read from its ``cmd`` in ``dvc.yaml``:

- ``triqdef ...`` (the console script ``triqdef.cli:main``): the command line
  is parsed with :func:`triqdef.cli.build_parser`; the stage's code is the
  command function it selects, the rest of ``cli.py`` (everything but the
  other ``_cmd_*`` functions: ``main`` and the parser), and the stage module
  ``triqdef.stages.<stage>``, which must be the one stage module that command
  function imports (else the stage and its command disagree: a problem).
- ``papermill notebooks/NN_name.ipynb ...``: the notebook's code (its Jupytext
  source ``notebooks/NN_name.py`` where it exists, else the ``.ipynb`` code
  cells) and the stage module ``triqdef.stages.<stage>``.

From those entry points the transitive closure of ``triqdef`` imports is
computed statically with :mod:`ast`: imports at module level and inside
functions, ``from triqdef.x import y`` where ``y`` is a submodule, every
package ``__init__.py`` on the way, and the non-Python files a module names
beside itself (``Path(__file__).parent / "triqdef.mplstyle"``; less
``NOT_STAGE_INPUTS`` below). The closure over-approximates what a run
executes (a module counts as soon as it is imported), so ``dvc status``
cannot miss a change in code the stage runs; the one blind spot is an import
by a computed name (``importlib.import_module(f"...")``), which the package
does not use.

The params sections a stage reads are the ``PARAMS`` tuple of its stage
module (read from the source, not imported). The stages enforce them at run
time (the CLI passes ``cfg.only(PARAMS)``, :class:`triqdef.config.StageConfig`):
a stage that reads a section it does not declare fails, so the smoke
pipeline of ``make test`` checks the tuples.

A stage reads only the profile it runs in, so ``dvc.yaml`` lists, of each
section, the keys that profile resolves from (:func:`triqdef.config.load_config`):
``base`` whole, then ``SECTION.common`` (where the section has one) and
``SECTION.${base.profile}``, which DVC fills in from ``params.yaml``. Changing
the ``smoke`` or ``gpu`` values therefore leaves the ``cpu`` results up to
date, and changing ``base.profile`` re-runs everything.

Only the code entries of a stage's ``deps`` (under ``lib/``, and the executed
notebook) are compared and rewritten; data and upstream outputs stay as
written. A listed folder covers every file under it (``__pycache__`` aside,
as in ``.dvcignore``); ``--write`` lists a folder when the closure holds all
of its files, else the files one by one.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
PACKAGE = "triqdef"
DVC_YAML = ROOT / "dvc.yaml"
PARAMS_YAML = ROOT / "params.yaml"
IGNORED_PARTS = {"__pycache__", ".ipynb_checkpoints"}  # as .dvcignore: never part of a folder's hash
# Files a module names that are not inputs of any stage, with the reason.
NOT_STAGE_INPUTS = {
    f"lib/{PACKAGE}/_sample/cifar10-sample-jpeg.tar.gz":
        "read only by `triqdef data fetch` (outside the pipeline); its result, data/cifar10, is a dep of every data stage",
}


# --------------------------------------------------------------------------- modules and their imports

def module_file(name: str, lib: Path = LIB) -> Path | None:
    """The file of module ``name`` under ``lib`` (a package's ``__init__.py``), or None."""
    base = lib.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path, lib: Path = LIB) -> str:
    rel = path.relative_to(lib).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _string_path(node: ast.AST) -> str | None:
    """A string constant, or the string constants that end a ``/`` chain (``here / "dir" / "a.txt"`` ->
    ``dir/a.txt``), as a relative path."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    parts: list[str] = []
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
            and isinstance(node.right.value, str):
        parts.insert(0, node.right.value)
        node = node.left
    return "/".join(parts) or None


def imports_of(tree: ast.AST, module: str, is_package: bool, lib: Path = LIB) -> set[str]:
    """Every ``triqdef`` module that ``tree`` imports anywhere (module level, functions, classes), with its
    parent packages. ``module`` / ``is_package`` resolve relative imports."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # kept only where it is a module
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    out: set[str] = set()
    for name in found:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            out.update(n for n in _with_parents(name) if module_file(n, lib) is not None)
    return out


def resources_of(tree: ast.AST, path: Path) -> set[Path]:
    """Non-Python files that a module names relative to its own folder (a style file, a committed sample)."""
    out = set()
    for node in ast.walk(tree):
        rel = _string_path(node)
        if rel and not rel.endswith(".py") and "\n" not in rel and len(rel) < 200:
            cand = path.parent / rel
            try:
                if cand.is_file():
                    out.add(cand.resolve())
            except OSError:
                continue
    return out


@dataclass
class Closure:
    modules: set[str] = field(default_factory=set)
    files: set[Path] = field(default_factory=set)


def closure(sources: list[tuple[ast.AST, str, bool]], lib: Path = LIB) -> Closure:
    """Transitive closure of ``triqdef`` imports from ``sources`` (tree, module name, is_package) under ``lib``."""
    out = Closure()
    todo: list[str] = []
    for tree, module, is_package in sources:
        todo.extend(imports_of(tree, module, is_package, lib))
    while todo:
        name = todo.pop()
        if name in out.modules:
            continue
        out.modules.add(name)
        path = module_file(name, lib)
        out.files.add(path.resolve())
        tree = ast.parse(path.read_text(), filename=str(path))
        out.files |= resources_of(tree, path)
        todo.extend(imports_of(tree, name, path.name == "__init__.py", lib) - out.modules)
    return out


def parse_module(name: str, lib: Path = LIB) -> tuple[ast.Module, Path]:
    path = module_file(name, lib)
    if path is None:
        raise LookupError(name)
    return ast.parse(path.read_text(), filename=str(path)), path


def declared_params(name: str, lib: Path = LIB) -> tuple[str, ...] | None:
    """The module's ``PARAMS`` tuple of params.yaml sections, read from its source (None where it has none)."""
    tree, _ = parse_module(name, lib)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "PARAMS" for t in targets) and node.value is not None:
            return tuple(ast.literal_eval(node.value))
    return None


# --------------------------------------------------------------------------- what a stage runs

NOTEBOOK_CMD = re.compile(r"\b(notebooks/[\w.-]+\.ipynb)\b")


def notebook_source(ipynb: Path) -> tuple[ast.Module, str]:
    """The notebook's code as one module: its Jupytext ``.py`` where present, else the ``.ipynb`` code cells."""
    py = ipynb.with_suffix(".py")
    if py.is_file():
        return ast.parse(py.read_text(), filename=str(py)), py.relative_to(ROOT).as_posix()
    cells = json.loads(ipynb.read_text())["cells"]
    code = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            code.append("\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!"))))
    return ast.parse("\n\n".join(code), filename=str(ipynb)), ipynb.relative_to(ROOT).as_posix()


def _cli_parts() -> tuple[ast.Module, dict[str, ast.FunctionDef]]:
    """``cli.py`` without its ``_cmd_*`` functions (main, the parser, helpers), and those functions by name."""
    tree, _ = parse_module(f"{PACKAGE}.cli")
    commands = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_cmd_")}
    rest = ast.Module(body=[n for n in tree.body if n not in commands.values()], type_ignores=[])
    return rest, commands


def _cli_command(argv: list[str]) -> str:
    """The name of the command function that ``triqdef ARGV`` runs, from the real parser."""
    sys.path.insert(0, str(LIB))
    try:
        from triqdef.cli import build_parser
    finally:
        sys.path.pop(0)
    return build_parser().parse_args(argv).func.__name__


def _command_stages(func: ast.FunctionDef) -> list[str]:
    """The stage modules (``triqdef.stages.<name>``, ``common`` aside) that a CLI command function imports."""
    prefix = f"{PACKAGE}.stages."
    mods = imports_of(func, f"{PACKAGE}.cli", False)
    return sorted(m[len(prefix):] for m in mods if m.startswith(prefix) and m != f"{prefix}common")


@dataclass
class StageCode:
    stage: str
    module: str | None            # triqdef.stages.<stage>, where it exists
    entry: list[str]              # what the closure starts from (for --show)
    files: set[Path]              # the code closure (lib files and resources)
    notebook: str | None          # the executed notebook (a dep of its stage)
    params: tuple[str, ...] | None
    problems: list[str]


def stage_items(name: str, body: dict) -> list[tuple[str, dict]]:
    """``(name, definition)``; a ``foreach`` stage once per item, ``${item}`` filled in; a ``matrix`` stage once
    per combination, ``${item.<axis>}`` filled in (an axis given as ``${section.key...}`` read from params.yaml)."""
    if "matrix" in body:
        import itertools

        axes = {k: _param_axis(v) for k, v in body["matrix"].items()}
        template = json.dumps({k: v for k, v in body.items() if k != "matrix"})
        out = []
        for combo in itertools.product(*axes.values()):
            text = template
            for k, v in zip(axes, combo):
                text = text.replace("${item.%s}" % k, str(v))
            out.append((name, json.loads(text)))
        return out
    if "foreach" not in body:
        return [(name, body)]
    out = []
    for item in body["foreach"]:
        text = json.dumps(body["do"]).replace("${item}", str(item))
        out.append((name, json.loads(text)))
    return out


def _param_axis(values):
    """A matrix axis: a list, or ``${section.key...}`` naming one in params.yaml."""
    if isinstance(values, str) and values.startswith("${") and values.endswith("}"):
        import yaml

        found = yaml.safe_load(PARAMS_YAML.read_text())
        for key in values[2:-1].split("."):
            found = found[key]
        return found
    return values


def stage_code(name: str, body: dict) -> StageCode:
    problems: list[str] = []
    sources: list[tuple[ast.AST, str, bool]] = []
    entry: list[str] = []
    notebook = None
    module = f"{PACKAGE}.stages.{name}"
    own: list[str] = []           # modules that run as entry points (their files count, not only their imports)
    commands_run = [c for _, item in stage_items(name, body)
                    for c in (item["cmd"] if isinstance(item["cmd"], list) else [item["cmd"]])]
    for cmd in commands_run:
        words = shlex.split(cmd)
        nb = NOTEBOOK_CMD.search(cmd)
        if words and words[0] == PACKAGE:
            rest, commands = _cli_parts()
            try:
                func = _cli_command(words[1:])
            except SystemExit:
                problems.append(f"cmd {cmd!r} is not a valid triqdef command line")
                continue
            stages = _command_stages(commands[func])
            if stages != [name]:
                problems.append(f"cmd {cmd!r} runs cli.{func}, which calls stage module(s) {stages or '(none)'}: "
                                f"expected {PACKAGE}.stages.{name} only")
            sources += [(rest, f"{PACKAGE}.cli", False), (commands[func], f"{PACKAGE}.cli", False)]
            own.append(f"{PACKAGE}.cli")
            entry += [f"{PACKAGE}.cli (without other commands)", f"{PACKAGE}.cli.{func}"]
        elif nb:
            notebook = nb.group(1)
            tree, shown = notebook_source(ROOT / notebook)
            sources.append((tree, "__notebook__", False))
            entry.append(shown)
        else:
            problems.append(f"cmd {cmd!r} runs neither the triqdef CLI nor a notebook: its code deps are unknown")
    params = None
    if module_file(module) is not None:
        tree, _ = parse_module(module)
        sources.append((tree, module, False))
        entry.append(module)
        own.append(module)
        params = declared_params(module)
        if params is None:
            problems.append(f"{module} defines no PARAMS tuple (the params.yaml sections the stage reads)")
    else:
        module = None
        problems.append(f"no stage module {PACKAGE}.stages.{name} (lib/{PACKAGE}/stages/{name}.py with PARAMS)")
    for m in own:  # the packages above each entry module run first (import triqdef, triqdef.stages, ...)
        parents = [ast.alias(name=p) for p in _with_parents(m)[:-1]]
        sources.append((ast.Module(body=[ast.Import(names=parents)], type_ignores=[]), m, False))
    files = closure(sources).files
    for m in own:  # the entry modules' own files (cli.py is not walked whole: only the parts above count)
        tree, path = parse_module(m)
        files |= {path.resolve()} | resources_of(tree, path)
    return StageCode(name, module, list(dict.fromkeys(entry)), files, notebook, params, problems)


# --------------------------------------------------------------------------- comparing with dvc.yaml

def _rel(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def _is_code_dep(dep: str) -> bool:
    return dep.startswith("lib/") or (dep.startswith("notebooks/") and dep.endswith((".ipynb", ".py")))


def files_under(rel: str) -> set[str]:
    """Files a dep entry covers: the file itself, or every file under the folder (``__pycache__`` aside)."""
    p = ROOT / rel
    if p.is_file():
        return {rel}
    if p.is_dir():
        return {_rel(f) for f in p.rglob("*") if f.is_file() and not IGNORED_PARTS & set(f.parts)}
    return set()


def expected_deps(code: StageCode) -> set[str]:
    out = {_rel(f) for f in code.files} - set(NOT_STAGE_INPUTS)
    if code.notebook:
        out.add(code.notebook)
    return out


def compact(files: set[str]) -> list[str]:
    """``files`` as dep entries: a folder under lib/ wherever every file under it is in ``files``."""
    out: list[str] = []

    def visit(folder: Path) -> None:
        rel = _rel(folder)
        if files_under(rel) and files_under(rel) <= files:
            out.append(rel)
            return
        for child in sorted(folder.iterdir()):
            if child.name in IGNORED_PARTS:
                continue
            if child.is_dir():
                visit(child)
            elif _rel(child) in files:
                out.append(_rel(child))

    visit(LIB / PACKAGE)
    return sorted(f for f in files if not f.startswith(f"lib/{PACKAGE}/")) + out  # the notebook first


def load_dvc_yaml() -> dict:
    import yaml

    return yaml.safe_load(DVC_YAML.read_text())


def stage_body(stages: dict, name: str) -> dict:
    body = stages[name]
    return body["do"] if "foreach" in body else body


PROFILE_KEY = "${base.profile}"   # DVC fills it in from params.yaml (dvc.yaml templating)


def params_keys(sections: tuple[str, ...] | list[str], raw: dict) -> list[str]:
    """The params.yaml keys a stage that reads ``sections`` depends on, in the profile it runs in: ``base`` whole;
    of every other section its ``common`` entry (where it has one) and its ``${base.profile}`` entry."""
    keys = []
    for s in sections:
        if s == "base":
            keys.append(s)
            continue
        if isinstance(raw.get(s), dict) and "common" in raw[s]:
            keys.append(f"{s}.common")
        keys.append(f"{s}.{PROFILE_KEY}")
    return keys


def listed_params(body: dict) -> list[str]:
    """The params.yaml keys a stage lists (plain entries, or ``{params.yaml: [keys]}``)."""
    out = []
    for p in body.get("params") or []:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, dict):
            for f, keys in p.items():
                if f == "params.yaml":
                    out.extend(keys)
    return out


def check(stages: dict | None = None) -> tuple[list[str], dict[str, StageCode]]:
    """Every problem of ``dvc.yaml``'s code deps and params, one line each, and the computed stage code."""
    import yaml

    stages = stages if stages is not None else load_dvc_yaml()["stages"]
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    sections = set(raw)
    problems, codes = [], {}
    for name in stages:
        code = codes[name] = stage_code(name, stages[name])
        problems += [f"stage {name}: {p}" for p in code.problems]
        body = stage_body(stages, name)
        listed = [d for d in body.get("deps") or [] if isinstance(d, str) and _is_code_dep(d)]
        want = expected_deps(code)
        covered: set[str] = set()
        for dep in listed:
            under = files_under(dep)
            if not under:
                problems.append(f"stage {name}: dep {dep} does not exist")
            covered |= under
            extra = sorted(under - want)
            if extra:
                what = dep if under == {dep} else f"{dep} (folder; not imported: {', '.join(extra)})"
                problems.append(f"stage {name}: extra dep {what}")
        for dep in compact(want - covered):
            problems.append(f"stage {name}: missing dep {dep}")
        if code.params is not None:
            have, need = set(listed_params(body)), set(params_keys(code.params, raw))
            for k in sorted(need - have):
                problems.append(f"stage {name}: missing params key {k} (section {k.split('.')[0]} is in "
                                f"{code.module}.PARAMS)")
            for k in sorted(have - need):
                why = ("not in " + f"{code.module}.PARAMS") if k.split(".")[0] not in code.params else \
                    f"the stage reads {k.split('.')[0]}.common and .{PROFILE_KEY} only"
                problems.append(f"stage {name}: extra params key {k} ({why})")
            for s in sorted(set(code.params) - sections):
                problems.append(f"stage {name}: {code.module}.PARAMS names {s!r}, which params.yaml does not define")
    return problems, codes


# --------------------------------------------------------------------------- rewriting dvc.yaml

def write(codes: dict[str, StageCode]) -> bool:
    """Rewrite the code deps and params of every stage in ``dvc.yaml``, keeping comments, order and the rest."""
    import yaml
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    yml = YAML()
    yml.preserve_quotes = True
    yml.width = 4096
    yml.indent(mapping=2, sequence=4, offset=2)
    text = DVC_YAML.read_text()
    doc = yml.load(text)
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    for name, code in codes.items():
        body = doc["stages"][name]
        body = body["do"] if "foreach" in body else body
        deps = body.get("deps")
        if deps is None:
            deps = body["deps"] = CommentedSeq()
        want = compact(expected_deps(code))
        keep_first = [d for d in deps if not (isinstance(d, str) and _is_code_dep(d))]
        # in place: the other entries (data, upstream outputs) keep their order and comments; code deps after them
        for i in reversed(range(len(deps))):
            if isinstance(deps[i], str) and _is_code_dep(deps[i]):
                del deps[i]
        assert list(deps) == keep_first
        deps.extend(want)
        if code.params is not None:
            params = body.get("params")
            if params is None:
                params = body["params"] = CommentedSeq()
            for i in reversed(range(len(params))):
                if isinstance(params[i], str):
                    del params[i]
            for i, k in enumerate(params_keys(code.params, raw)):
                params.insert(i, k)
    import io

    buf = io.StringIO()
    yml.dump(doc, buf)
    new = buf.getvalue()
    if new != text:
        DVC_YAML.write_text(new)
        return True
    return False


# --------------------------------------------------------------------------- which stages a change re-runs

def outs_of(body: dict) -> list[str]:
    out = []
    for key in ("outs", "metrics", "plots"):
        for o in body.get(key) or []:
            out.append(next(iter(o)) if isinstance(o, dict) else o)
    return out


def affected(changed: str, stages: dict, codes: dict[str, StageCode]) -> tuple[list[str], list[str]]:
    """(stages whose own deps hold ``changed``: what ``dvc status`` reports; every stage ``dvc repro`` then re-runs,
    downstream ones included)."""
    direct = [n for n, c in codes.items() if changed in expected_deps(c)]
    items = {n: [b for _, b in stage_items(n, stages[n])] for n in stages}

    def under(path: str, prefix: str) -> bool:
        return path == prefix or path.startswith(prefix.rstrip("/") + "/") or prefix.startswith(path.rstrip("/") + "/")

    rerun, todo = set(direct), list(direct)
    while todo:
        outs = [o for b in items[todo.pop()] for o in outs_of(b)]
        for n in stages:
            if n not in rerun and any(under(o, d) for b in items[n] for d in b.get("deps") or [] for o in outs):
                rerun.add(n)
                todo.append(n)
    order = list(stages)
    return direct, sorted(rerun, key=order.index)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dvc_deps", description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="exit 1 listing every missing / extra dep or params key")
    g.add_argument("--write", action="store_true", help="rewrite the code deps and params of dvc.yaml")
    g.add_argument("--show", action="store_true", help="each stage's entry points, code deps and params")
    g.add_argument("--affected", nargs="+", metavar="FILE", help="the stages a change to FILE re-runs")
    a = ap.parse_args(argv)
    stages = load_dvc_yaml()["stages"]
    try:
        problems, codes = check(stages)
    except SyntaxError as exc:
        print(f"dvc_deps: error: cannot parse {exc.filename} (line {exc.lineno}): {exc.msg}", file=sys.stderr)
        return 2
    if a.write:
        changed = write(codes)
        problems, codes = check()
        print(f"dvc.yaml {'rewritten' if changed else 'already up to date'}")
    if a.show:
        for name, c in codes.items():
            print(f"{name}: entry {', '.join(c.entry)}\n  params: {', '.join(c.params or ('?',))}\n  deps: "
                  + "\n        ".join(compact(expected_deps(c))))
    if a.affected:
        for f in a.affected:
            direct, rerun = affected(Path(f).as_posix(), stages, codes)
            print(f"{f}: dvc status reports {', '.join(direct) or '(none)'}; dvc repro re-runs {', '.join(rerun) or '(none)'}")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems and (a.check or a.write) else 0


if __name__ == "__main__":
    raise SystemExit(main())
