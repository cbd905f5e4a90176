"""One config dialect for every recipe: HyperPyYAML row files on a ``base:`` chain, checked before any work.

A row file is a HyperPyYAML file (``!ref``, ``!new:``, ``!name:`` ... allowed anywhere) that names the file it
builds on with ``base: <file>`` (relative to the row file). A base may name its own base, to any depth (a GPU base
states only what differs from the CPU base). Command-line overrides come last and may replace ``base`` itself
(``--base base_gpu.yaml``, relative to the row file).

Merging, from the root base to the command line: every key of a level must exist in the levels below it (a typo
is an error naming the key, where it came from and close matches). A mapping merges into the mapping it overrides,
key by key, with the same rule; any other value (or a mapping with another ``!new:`` class) replaces the old one.
Nested keys are overridden with dots: ``--student_model.d_model=128`` (one documented style for both recipes).

Values are checked against a schema derived from the root base before anything is built: a key's type is the type
of its base value (an int stays an int, a float accepts ints, ...), or what its YAML comment declares in brackets
at its start, e.g. ``later_task_epochs: null   # [int>=1|null] epochs of tasks 2..``. A declaration lists
alternatives separated by ``|``: ``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``, ``null``, each number
type optionally bounded (``int>=1``, ``float>0``, ``float[0,1]``), or literal words (``random|herding``) that the
value must be one of.

    hp, resolved_text = load_hparams("hparams/slurp_incremental/seq_kd.yaml", "seed: 1\\nlr: 0.002")
"""

from __future__ import annotations

import difflib
import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

__all__ = [
    "HparamsError",
    "UnknownHparamError",
    "HparamValueError",
    "load_hparams",
    "load_tree",
    "row_chain",
    "describe_hparams",
    "plain",
    "parse_overrides",
]


class HparamsError(ValueError):
    """A row file or override that cannot be used; the message names the file or option."""


class UnknownHparamError(HparamsError, KeyError):
    """An override (row file or command line) names a key its base files do not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class HparamValueError(HparamsError):
    """A setting whose value does not fit its declared (or base) type or range."""


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    return y


def load_tree(path: str | os.PathLike) -> CommentedMap:
    """Round-trip load of one YAML file (tags and comments kept); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hparams file not found: {path}")
    try:
        tree = _yaml().load(path.read_text(encoding="utf-8"))
    except Exception as err:  # ruamel raises many error types, all with a problem mark
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise HparamsError(f"{where}: invalid YAML ({str(err).splitlines()[0]})") from None
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, Mapping):
        raise HparamsError(f"{path}: expected a mapping of settings at the top level")
    return tree


def row_chain(path: str | os.PathLike, base_override: str | None = None) -> list[tuple[Path, CommentedMap]]:
    """The files of a row, root base first: [(path, tree), ...]; ``base`` keys are removed from the trees.
    ``base_override`` replaces the row file's own ``base`` (relative to the row file)."""
    chain: list[tuple[Path, CommentedMap]] = []
    seen: set[Path] = set()
    current: Path | None = Path(path)
    override = base_override
    while current is not None:
        real = current.resolve()
        if real in seen:
            raise HparamsError(f"{current}: 'base' files form a cycle ({' -> '.join(str(p) for p, _ in chain)})")
        seen.add(real)
        tree = load_tree(current)
        base = tree.pop("base", None)
        if override is not None:
            base, override = override, None
        chain.append((current, tree))
        if base is None:
            current = None
        else:
            nxt = Path(str(base))
            nxt = nxt if nxt.is_absolute() else current.parent / nxt
            if not nxt.is_file():
                raise FileNotFoundError(f"{current}: field 'base' names {nxt}, which does not exist")
            current = nxt
    return chain[::-1]


def _check_given_once(text: str) -> None:
    """A key given twice on the command line (``--lr 0.1 ... --lr 0.2``) is an error naming it and both values."""
    seen: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"([^\s#:][^:]*?)\s*:(?:\s+(.*))?$", line)
        if not m:
            continue
        key, value = m.group(1), (m.group(2) or "").strip()
        if key in seen:
            raise HparamsError(
                f"command-line override --{key} is given twice ({seen[key]!r} and {value!r}); give it once"
            )
        seen[key] = value


def parse_overrides(overrides: str | Mapping | list[str] | None) -> CommentedMap:
    """Command-line overrides as a tree: SpeechBrain's YAML string (``"a: 1\\nb.c: 2"``), a mapping, or
    ``["--a=1", "--b.c", "2"]``; dotted keys become nested mappings."""
    if overrides is None or overrides == "" or overrides == []:
        return CommentedMap()
    if isinstance(overrides, list):
        lines, i = [], 0
        while i < len(overrides):
            a = overrides[i]
            if not a.startswith("--"):
                raise HparamsError(f"unexpected argument {a!r}: overrides look like --key=value or --key value")
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
                k, v = a[2:], overrides[i + 1]
                i += 1
            else:
                k, v = a[2:], "true"
            lines.append(f"{k}: {v}")
            i += 1
        overrides = "\n".join(lines)
    if isinstance(overrides, str):
        _check_given_once(overrides)
        try:
            tree = _yaml().load(overrides)
        except Exception as err:
            first = str(err).strip().splitlines()
            raise HparamsError(f"bad command-line overrides: {' '.join(first[:4])}") from None
        if tree is None:
            return CommentedMap()
        if not isinstance(tree, Mapping):
            raise HparamsError(f"bad command-line overrides: expected key: value pairs, got {overrides!r}")
    else:
        tree = CommentedMap(overrides)
    out = CommentedMap()
    for key, value in tree.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, CommentedMap())
            if not isinstance(node, Mapping):
                raise HparamsError(f"override --{key}: {p!r} is given both as a value and as a section")
        node[parts[-1]] = value
    return out


def _tag(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag)
    return value if isinstance(value, str) and value.startswith("!") else None


def _merge(dst: CommentedMap, src: Mapping, where: str, known_in: str, prefix: str = "") -> None:
    """Recursive must-match update of ``dst`` by ``src`` (see the module docstring)."""
    for key, value in src.items():
        full = f"{prefix}{key}"
        if key not in dst:
            close = difflib.get_close_matches(str(key), [str(k) for k in dst], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(map(str, dst))}"
            what = f"command-line override --{full}" if where == "command-line override" else f"{where}: key {full!r}"
            raise UnknownHparamError(f"{what}: no hparam {full!r} in {known_in}{hint}")
        old = dst[key]
        same_class = _tag(value) is None or _tag(value) == _tag(old)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and same_class:
            _merge(old, value, where, known_in, prefix=f"{full}.")
        else:
            dst[key] = value


# ------------------------------------------------------------------------------------------------------ schema
_NUM = re.compile(r"^(int|float)(?:(>=|>|<=|<)(-?[\d.e+-]+))?(?:(>=|>|<=|<)(-?[\d.e+-]+))?$")
_RANGE = re.compile(r"^(int|float)\[(-?[\d.e+-]+),\s*(-?[\d.e+-]+)\]$")
_TYPES = {"int", "float", "bool", "str", "list", "dict", "null", "path"}


@dataclass
class _Rule:
    """One allowed form of a value: a type with optional bounds, or a literal word."""

    kind: str
    bounds: tuple[tuple[str, float], ...] = ()
    literal: str | None = None

    def accepts(self, v: Any) -> bool:
        if self.literal is not None:
            return isinstance(v, str) and v == self.literal
        if self.kind == "null":
            return v is None
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind in ("int", "float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            if self.kind == "int" and not isinstance(v, int):
                return False
            for op, bound in self.bounds:
                ok = {">=": v >= bound, ">": v > bound, "<=": v <= bound, "<": v < bound}[op]
                if not ok:
                    return False
            return not (isinstance(v, float) and math.isnan(v))
        if self.kind in ("str", "path"):
            return isinstance(v, str)
        if self.kind == "list":
            return isinstance(v, list)
        if self.kind == "dict":
            return isinstance(v, Mapping)
        return True

    def __str__(self) -> str:
        if self.literal is not None:
            return repr(self.literal)
        return self.kind + "".join(f"{op}{b:g}" for op, b in self.bounds)


def _parse_rules(spec: str) -> list[_Rule] | None:
    rules: list[_Rule] = []
    for tok in (t.strip() for t in spec.split("|")):
        if not tok:
            return None
        m = _RANGE.match(tok)
        if m:
            rules.append(_Rule(m.group(1), ((">=", float(m.group(2))), ("<=", float(m.group(3))))))
            continue
        m = _NUM.match(tok)
        if m:
            bounds = tuple((m.group(i), float(m.group(i + 1))) for i in (2, 4) if m.group(i))
            rules.append(_Rule(m.group(1), bounds))
        elif tok in _TYPES:
            rules.append(_Rule(tok))
        elif re.match(r"^[\w.\-/]+$", tok):
            rules.append(_Rule("literal", literal=tok))
        else:
            return None
    return rules


def _comment_of(tree: CommentedMap, key: str) -> str:
    """The end-of-line comment of ``key`` in ``tree`` (without ``#``), or ''."""
    items = getattr(tree.ca, "items", {}) or {}
    entry = items.get(key)
    if not entry:
        return ""
    for part in entry:
        tok = part if not isinstance(part, list) else (part[0] if part else None)
        value = getattr(tok, "value", None)
        if isinstance(value, str) and value.strip().startswith("#"):
            return value.strip().splitlines()[0].lstrip("#").strip()
    return ""


def _schema(root: CommentedMap, prefix: str = "") -> dict[str, list[_Rule]]:
    """{key: allowed forms} of the root base's keys, nested ones dotted (``student_model.d_model``): declared in
    the key's comment (``# [int>=1|null] ...``), else the type of its value in the base."""
    out: dict[str, list[_Rule]] = {}
    for key, value in root.items():
        name = f"{prefix}{key}"
        comment = _comment_of(root, key)
        m = re.match(r"^\[([^\]]+(?:\][^\]]*)?)\]", comment)
        declared = _parse_rules(m.group(1)) if m else None
        if declared:
            out[name] = declared
            continue
        if isinstance(value, Mapping):  # nested settings, also the arguments of a !new:/!name: object
            out.update(_schema(value, f"{name}."))
            continue
        if _tag(value) is not None or value is None:
            continue
        if isinstance(value, bool):
            out[name] = [_Rule("bool")]
        elif isinstance(value, int):
            out[name] = [_Rule("int")]
        elif isinstance(value, float):
            out[name] = [_Rule("float")]
        elif isinstance(value, str):
            out[name] = [_Rule("str")]
        elif isinstance(value, list):
            out[name] = [_Rule("list")]
    return out


def strip_comments(node: Any) -> Any:
    """A copy of a round-trip YAML tree without comments (tags kept): ruamel can misplace comments that sit
    between a key and a tagged block value when it dumps the tree again."""
    tag = getattr(node, "tag", None)
    if isinstance(node, Mapping):
        out = CommentedMap((k, strip_comments(v)) for k, v in node.items())
        if _tag(node):
            out.yaml_set_ctag(tag)
        if getattr(node, "fa", None) is not None and node.fa.flow_style():
            out.fa.set_flow_style()
        return out
    if isinstance(node, (list, CommentedSeq)):
        out_seq = CommentedSeq(strip_comments(v) for v in node)
        if _tag(node):
            out_seq.yaml_set_ctag(tag)
        # a flow sequence of mappings is written in block style: ruamel writes a one-key tagged flow mapping inside
        # a flow sequence as a bare pair, which reads back as another structure
        nested = any(isinstance(v, Mapping) for v in node)
        if getattr(node, "fa", None) is not None and node.fa.flow_style() and not nested:
            out_seq.fa.set_flow_style()
        else:
            out_seq.fa.set_block_style()
        return out_seq
    return node


def plain(node: Any) -> Any:
    """A round-trip YAML node as plain Python (tagged nodes become ``{"!tag": args}`` / ``"!tag value"``)."""
    tag = _tag(node)
    if isinstance(node, TaggedScalar):
        return f"{tag} {node.value}"
    if isinstance(node, Mapping):
        d = {str(k): plain(v) for k, v in node.items()}
        return {tag: d} if tag else d
    if isinstance(node, (list, tuple, CommentedSeq)):
        lst = [plain(v) for v in node]
        return {tag: lst} if tag else lst
    if hasattr(node, "real") and isinstance(node, float):
        return float(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, str):
        return str(node)
    return node


def _check_values(tree: CommentedMap, schema: dict[str, list[_Rule]], origins: dict[str, str]) -> None:
    for key, rules in schema.items():
        node: Any = tree
        for part in key.split("."):  # a nested key: present only if every level is a mapping
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            value = node
            if _tag(value) is not None:  # !ref and friends: resolved later, checked by their consumer
                continue
            v = plain(value)
            if any(r.accepts(v) for r in rules):
                continue
            _value_error(key, rules, v, origins)


def _value_error(key: str, rules: list[_Rule], v: Any, origins: dict[str, str]) -> None:
    where = origins.get(key.split(".")[0], "the base file")
    allowed = " or ".join(str(r) for r in rules)
    raise HparamValueError(f"{where}: hparam {key!r} must be {allowed}, got {v!r}")


# ------------------------------------------------------------------------------------------------------ loading
def load_hparams(
    path: str | os.PathLike, overrides: str | Mapping | list[str] | None = None, *, validate: bool = True
) -> tuple[dict[str, Any], str]:
    """Load a row file with its ``base`` chain and the command-line ``overrides``; returns (hparams, resolved
    YAML text). Raises :class:`UnknownHparamError` (a KeyError) for a key no base has, :class:`HparamValueError`
    for a value of the wrong type or range, before any object of the file is built."""
    from hyperpyyaml import load_hyperpyyaml, resolve_references

    path = Path(path)
    cli = parse_overrides(overrides)
    base_override = cli.pop("base", None)
    chain = row_chain(path, None if base_override is None else str(base_override))
    root_path, tree = chain[0]
    origins: dict[str, str] = {}
    for level_path, level in chain[1:]:
        _merge(tree, level, where=f"{level_path}", known_in=str(root_path))
        origins.update({str(k): f"{level_path}" for k in level})
    if cli:
        _merge(tree, cli, where="command-line override", known_in=f"{path} or its base files")
        origins.update({str(k): f"command-line override --{k}" for k in cli})
    if validate:
        _check_values(tree, _schema(load_tree(root_path)), origins)
    buf = io.StringIO()
    _yaml().dump(strip_comments(tree), buf)
    text = buf.getvalue()
    try:
        hp = load_hyperpyyaml(text)
    except Exception as err:
        raise type(err)(f"{path}: {err}").with_traceback(err.__traceback__) from None
    resolved = resolve_references(text)
    resolved_text = resolved.getvalue() if isinstance(resolved, io.StringIO) else str(resolved)
    return hp, resolved_text


_KEY_LINE = re.compile(r"^([A-Za-z_][\w.]*)\s*:(.*)$")


def key_comments(path: str | os.PathLike) -> dict[str, str]:
    """{top-level key: its comment} read from the file's text: the comment at the end of the key's line with its
    indented continuation lines, else the comment lines right above the key (section rules ``# ---`` excluded).
    (The YAML parser attaches a comment that sits between two keys to the wrong one.)"""
    comments: dict[str, str] = {}
    above: list[str] = []
    last: str | None = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = _KEY_LINE.match(line)
        if m:
            last = m.group(1)
            rest = m.group(2)
            hash_at = rest.find(" #") if not rest.lstrip().startswith("#") else rest.find("#")
            eol = rest[hash_at:].strip().lstrip("#").strip() if hash_at >= 0 else ""
            comments[last] = eol or " ".join(above)
            above = []
        elif line.strip().startswith("#"):
            text = line.strip().lstrip("#").strip()
            if line.startswith((" ", "\t")) and last is not None and comments.get(last):  # a continuation line
                comments[last] += " " + text
            elif not set(text) <= set("- ") and not text.startswith("-" * 8):
                above.append(text)
            else:
                above = []
        elif not line.strip():
            above = []
    return comments


def describe_hparams(path: str | os.PathLike) -> list[tuple[str, Any, str]]:
    """(key, value of the row, comment of the key in the file that defines it) for every top-level setting."""
    chain = row_chain(path)
    merged: dict[str, tuple[Any, str]] = {}
    for file, tree in chain:
        texts = key_comments(file)
        for key, value in tree.items():
            comment = texts.get(str(key)) or merged.get(str(key), (None, ""))[1]
            merged[str(key)] = (plain(value), comment)
    return [(k, v, c) for k, (v, c) in merged.items()]


#: the mark, in a setting's comment, of a setting that acts only from task 2 on (see :func:`later_task_keys`)
LATER_MARK = "{later}"


def later_task_keys(path: str | os.PathLike) -> set[str]:
    """The top-level settings of a row whose comment carries ``{later}`` in any file of its chain (base first): they
    act only from task 2 on (memory, KD, continual methods, later-task epochs), so rows that differ only in them
    share task 1 (:mod:`slukd.continual.first_task`). The mark belongs to the setting: a row or base that sets it
    again with a comment of its own keeps it."""
    keys: set[str] = set()
    for file, tree in row_chain(path):
        comments = key_comments(file)
        keys |= {str(k) for k in tree if LATER_MARK in comments.get(str(k), "")}
    return keys
