"""The DARTS cell search space (Liu et al., ICLR 2019; also NAS-Bench-301's space).

An architecture is a pair of cells, ``normal`` and ``reduce``, written in the standard
DARTS / NAS-Bench-301 genotype form::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ... 8 pairs],
             normal_concat=[2, 3, 4, 5], reduce=[... 8 pairs], reduce_concat=[2, 3, 4, 5])

(on one line in canonical form). Pairs ``2k`` and ``2k+1`` are the two inputs of
intermediate node ``k`` (k = 0..3); input index ``j`` means c_{k-2} (0), c_{k-1} (1) or
intermediate node ``j-2``, so node ``k`` may use ``j < k+2``. The two inputs of a node
must differ (as in DARTS' discretisation and NAS-Bench-301), and both concat lists are
``[2, 3, 4, 5]``. Ops: :data:`OPS`.

Parsing is lenient: whitespace, quote style, lists or tuples, ``range(2, 6)`` for the
concat lists, positional fields, a ``{'normal': ..., ...}`` dict, or the name of a
published genotype (:func:`named`: ``DARTS_V1``, ``DARTS_V2`` (= ``DARTS``),
``PC_DARTS``, ``PDARTS``; case-insensitive). It uses a small parser of its own, never
``eval``: it reads Python literals, ``range(...)`` and the ``Genotype(...)`` call only,
iteratively (no recursion, brackets nested at most 16 deep), in strings of at most
:data:`~search_spaces.base.MAX_ARCH_LENGTH` characters; every failure is an
:class:`~search_spaces.base.InvalidArchitecture` whose message quotes a short prefix.

Structured form: :class:`Genotype` (a NamedTuple of tuples).

Encoding: 32 ints; per cell (normal, then reduce), per node ``k`` the four values
``[op_a, in_a, op_b, rank_b]`` with ``op`` an index into :data:`OPS` (7 choices),
``in_a`` in ``0..k+1`` (k+2 choices) and ``rank_b`` the position of the second input
among the ``k+1`` inputs left after removing ``in_a``. Every vector within
:attr:`DartsSpace.encoding_choices` is a valid architecture, and the pair order is kept,
so ``decode(encode(a)) == validate(a)``.

Equivalence (``canonical`` / ``hash``): the two inputs of a node are an unordered pair
(their sum does not depend on the order), so each node's pairs are sorted by (input, op
index). Permuting intermediate nodes, which only permutes the concatenated channels, is
not treated as equivalent.

Network (:func:`build_network`): the DARTS CIFAR evaluation network (``NetworkCIFAR``)
exactly as GHN-2's reference code builds it (``ppuda.deepnets1m.net.Network`` with
``preproc=True, norm='bn-track', stem_type=0, glob_avg=True, fc_layers=0``): stem
Conv3x3(3, 3C, no bias) + BN; ``layers`` cells, reduction cells (stride 2, channels x2)
at ``layers//3`` and ``2*layers//3``; cell inputs preprocessed by ReLU-Conv1x1-BN, or by
FactorizedReduce after a reduction cell; SepConv = (ReLU, depthwise kxk, 1x1, BN) twice;
DilConv = ReLU, depthwise kxk dilation 2, 1x1, BN; pools alone (avg without padding in
the count); ``skip_connect`` = identity, or FactorizedReduce on the stride-2 edges of a
reduction cell; drop-path on non-identity edges in training; optional auxiliary head
after cell ``2*layers//3``; global average pooling; linear classifier. All BN layers are
affine and track running statistics. Parameter names, shapes and their order equal
ppuda's (e.g. ``stem.0.weight``, ``cells.1.preprocess0.op.1.weight``,
``cells.0._ops.0.op.5.weight``).

Differences from the original DARTS code (``quark0/darts`` ``NetworkCIFAR``), all taken
from ppuda so that GHN-2 sees the same network:
  * the classifier is ``nn.Sequential(nn.Linear)``, so its parameters are
    ``classifier.0.weight`` / ``classifier.0.bias`` (DARTS: ``classifier.weight``);
  * cell 0 is never a reduction cell (matters only for ``layers < 3``).
Differences from ppuda: ``forward`` returns the logits tensor, or ``(logits, aux_logits)``
only in training mode with ``auxiliary=True`` (ppuda always returns ``(logits, aux)``,
with ``aux=None`` when unused); drop-path is computed out of place.

Example:
    >>> from search_spaces.darts import DARTS_V2, DartsSpace
    >>> space = DartsSpace()
    >>> space.validate("darts_v2") == DARTS_V2
    True
    >>> model = space.build(DARTS_V2, C=16, layers=8)
    >>> sum(p.numel() for p in model.parameters())
    246106
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np
import torch
from torch import nn

from .base import InvalidArchitecture, RNGLike, SearchSpace, as_rng, check_arch_text, short_repr
from .ops import AvgPool, ReLUConvBN

__all__ = ["OPS", "Genotype", "DartsSpace", "named", "build_network", "NetworkCIFAR",
           "Cell", "DARTS_V1", "DARTS_V2", "DARTS", "PC_DARTS", "PDARTS"]

#: the DARTS ops (DARTS' PRIMITIVES without ``none``); the order defines the encoding
OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                        "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
N_NODES = 4  # intermediate nodes per cell
CONCAT: tuple[int, ...] = (2, 3, 4, 5)
FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")

Pair = tuple[str, int]


class Genotype(NamedTuple):
    """A DARTS architecture; field names and meaning as DARTS' ``Genotype`` namedtuple."""

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]


def _fmt(g: Genotype) -> str:
    def cell(pairs: Iterable[Pair]) -> str:
        return "[" + ", ".join(f"({op!r}, {j})" for op, j in pairs) + "]"

    def concat(c: Iterable[int]) -> str:
        return "[" + ", ".join(str(i) for i in c) + "]"

    return (f"Genotype(normal={cell(g.normal)}, normal_concat={concat(g.normal_concat)}, "
            f"reduce={cell(g.reduce)}, reduce_concat={concat(g.reduce_concat)})")


def _g(normal: list[Pair], reduce: list[Pair]) -> Genotype:
    return Genotype(tuple(normal), CONCAT, tuple(reduce), CONCAT)


# Published genotypes (DARTS cnn/genotypes.py, PC-DARTS, P-DARTS as in ppuda's genotypes.py)
_NAMED: dict[str, Genotype] = {
    "DARTS_V1": _g(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
    "DARTS_V2": _g(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
    "PC_DARTS": _g(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]),
    "PDARTS": _g(
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)]),
}
_NAMED["DARTS"] = _NAMED["DARTS_V2"]
_NAMED["PC_DARTS_CIFAR"] = _NAMED["PC_DARTS"]

DARTS_V1: str = _fmt(_NAMED["DARTS_V1"])
DARTS_V2: str = _fmt(_NAMED["DARTS_V2"])
DARTS: str = DARTS_V2
PC_DARTS: str = _fmt(_NAMED["PC_DARTS"])
PDARTS: str = _fmt(_NAMED["PDARTS"])


def named() -> dict[str, str]:
    """Published genotypes by name (canonical strings); ``DARTS`` is ``DARTS_V2``."""
    return {name: _fmt(g) for name, g in _NAMED.items()}


# ===================================================================== parsing
_HINT = ("expected Genotype(normal=[(op, j), ... 8 pairs], normal_concat=[2, 3, 4, 5], "
         "reduce=[... 8 pairs], reduce_concat=[2, 3, 4, 5]) or a name: " + ", ".join(_NAMED))


# The genotype text is read by a small tokenizer and an iterative parser (an explicit
# stack, no recursion, a nesting limit) into the tiny tree below; Python's own ``ast``
# recurses in C and fails with RecursionError / MemoryError on hostile nesting.
_MAX_DEPTH = 16  # a genotype nests 3 deep: Genotype( [ ( ... ) ] )
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<num>(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>\*\*|//|==|!=|<=|>=|<<|>>|[-+*/%@&|^~<>()\[\]{},:=.;!])
""", re.VERBOSE | re.ASCII)
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CONSTANTS = {"True": True, "False": False, "None": None}


@dataclass
class _Node:
    """One value of the genotype text: ``kind`` is const, name, seq, dict, call, attr or bad."""

    kind: str
    value: Any = None  # const: the value; name: dotted name; attr: attribute name; bad: source text
    items: list = field(default_factory=list)  # seq: nodes; dict: (key, value); call: args
    keywords: list = field(default_factory=list)  # call: (name, node)
    func: "_Node | None" = None  # call / attr: the called or accessed node


@dataclass
class _Frame:
    """An open bracket of the parser's stack."""

    opener: str  # '(', '[', '{', or '' for the whole text
    func: _Node | None  # the called node when '(' opens a call
    start: int  # where the current item starts in the text
    items: list = field(default_factory=list)
    keywords: list = field(default_factory=list)
    key: _Node | None = None  # dict: key waiting for its value
    keyword: str | None = None  # call: keyword waiting for its value
    comma: bool = False  # '(' with a comma is a tuple, without one just parentheses
    operator: bool = False  # the current item uses an operator: not a literal


def _syntax_error(text: str, pos: int, why: str) -> InvalidArchitecture:
    return InvalidArchitecture(f"cannot parse DARTS genotype {short_repr(text)} ({why} at character {pos}); {_HINT}")


def _tokens(text: str):
    """(kind, value, position) of each token, ending with ('end', None, len(text))."""
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _syntax_error(text, pos, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind != "ws":
            tok = m.group()
            if kind == "str":
                try:
                    yield "const", ast.literal_eval(tok), pos  # one flat string token
                except (ValueError, SyntaxError):
                    raise _syntax_error(text, pos, "bad string literal") from None
            elif kind == "num":
                try:
                    yield "const", ast.literal_eval(tok.replace("_", "")), pos
                except (ValueError, SyntaxError):  # e.g. an int of more than 4300 digits
                    raise _syntax_error(text, pos, "bad number") from None
            elif kind == "name" and tok in _CONSTANTS:
                yield "const", _CONSTANTS[tok], pos
            else:
                yield kind, tok, pos
        pos = m.end()
    yield "end", None, n


def _parse_tree(text: str) -> _Node:
    """Parse genotype text into a :class:`_Node` tree, iteratively."""
    stack = [_Frame("", None, 0)]
    cur: _Node | None = None  # the value just read, awaiting ',', a closer, '.' or '('
    sign: int | None = None  # unary +/- read before a number
    dot = False  # '.' read after a value
    for kind, tok, pos in _tokens(text):
        top = stack[-1]
        if cur is None:  # a value is expected
            if kind == "const":
                if sign is not None:
                    if type(tok) not in (int, float):
                        top.operator = True
                    else:
                        tok = sign * tok
                    sign = None
                cur = _Node("const", tok)
            elif kind == "name":
                cur = _Node("name", tok)
                if sign is not None:
                    top.operator, sign = True, None
            elif kind == "op" and tok in "+-" and sign is None:
                sign = -1 if tok == "-" else 1
            elif kind == "op" and tok in _OPEN:
                if len(stack) > _MAX_DEPTH:
                    raise _syntax_error(text, pos, f"nested more than {_MAX_DEPTH} deep")
                if sign is not None:
                    top.operator, sign = True, None
                stack.append(_Frame(tok, None, pos + 1))
            elif kind == "op" and tok in ")]}" and top.opener and _OPEN[top.opener] == tok \
                    and top.key is None and top.keyword is None and sign is None and not top.operator:
                cur = _close(stack.pop())  # empty brackets or a trailing comma
            else:
                raise _syntax_error(text, pos, "expected a value" if kind != "end" else "unexpected end")
            continue
        # a value has been read
        if dot:  # after '.': an attribute name must follow
            if kind != "name":
                raise _syntax_error(text, pos, "expected a name after '.'")
            cur = _Node("name", f"{cur.value}.{tok}") if cur.kind == "name" else _Node("attr", tok, func=cur)
            dot = False
            continue
        if kind == "op" and tok == ".":
            dot = True
            continue
        if kind == "op" and tok == "(":
            if len(stack) > _MAX_DEPTH:
                raise _syntax_error(text, pos, f"nested more than {_MAX_DEPTH} deep")
            stack.append(_Frame("(", cur, pos + 1))
            cur = None
            continue
        if kind == "op" and tok == "=" and top.func is not None and cur.kind == "name" \
                and "." not in cur.value and top.keyword is None and not top.operator:
            top.keyword, cur = cur.value, None
            top.start = pos + 1
            continue
        if kind == "op" and tok == ":" and top.opener == "{" and top.key is None:
            top.key, cur = _item(text, top, cur, pos), None
            top.start, top.operator = pos + 1, False
            continue
        if kind == "op" and tok in (",", ")", "]", "}") or kind == "end":
            node = _item(text, top, cur, pos)
            cur = None
            if top.opener == "{":
                if top.key is None:
                    raise _syntax_error(text, pos, "expected 'key: value' in a dict")
                top.items.append((top.key, node))
                top.key = None
            elif top.keyword is not None:
                top.keywords.append((top.keyword, node))
                top.keyword = None
            elif top.keywords:
                raise _syntax_error(text, pos, "positional argument after a keyword argument")
            else:
                top.items.append(node)
            top.start, top.operator = pos + 1, False
            if kind == "end":
                if len(stack) > 1:
                    raise _syntax_error(text, pos, f"unclosed {stack[-1].opener!r}")
                return top.items[0]
            if tok == ",":
                if not top.opener:
                    raise _syntax_error(text, pos, "',' outside brackets")
                top.comma = True
                continue
            if not top.opener or _OPEN[top.opener] != tok:
                raise _syntax_error(text, pos, f"unmatched {tok!r}")
            cur = _close(stack.pop())
            continue
        if kind == "op" and tok not in "()[]{},:=.;":
            top.operator = True  # a binary operator: the item is no literal, but keep reading
            cur = None
            continue
        raise _syntax_error(text, pos, f"unexpected {tok!r}" if kind != "end" else "unexpected end")
    raise AssertionError("unreachable: the token stream always ends with 'end'")


def _item(text: str, frame: _Frame, node: _Node, pos: int) -> _Node:
    """The finished item of ``frame``: ``node``, or a 'bad' node if it used an operator."""
    if frame.operator:
        return _Node("bad", text[frame.start:pos].strip())
    return node


def _close(frame: _Frame) -> _Node:
    if frame.func is not None:
        return _Node("call", items=frame.items, keywords=frame.keywords, func=frame.func)
    if frame.opener == "{":
        return _Node("dict", items=frame.items)
    if frame.opener == "(" and len(frame.items) == 1 and not frame.comma:
        return frame.items[0]  # parentheses around one value
    return _Node("seq", items=frame.items)


def _source(node: _Node) -> str:
    """A short description of a node for error messages."""
    if node.kind == "bad":
        return short_repr(node.value)
    if node.kind == "name":
        return short_repr(node.value)
    if node.kind == "call":
        return f"a call of {_source(node.func) if node.func is not None else '?'}"
    if node.kind == "attr":
        return f"an attribute {short_repr(node.value)}"
    return f"a {node.kind}"


def _literal(node: _Node, what: str) -> Any:
    """A Python value, where ``range(a[, b[, c]])`` is allowed (old DARTS genotypes use it).

    Recursion here is bounded by the parser's nesting limit.
    """
    if node.kind == "const":
        return node.value
    if node.kind == "seq":
        return [_literal(e, what) for e in node.items]
    if node.kind == "call" and node.func is not None and node.func.kind == "name" \
            and node.func.value == "range" and not node.keywords:
        args = [_literal(a, what) for a in node.items]
        if not (1 <= len(args) <= 3 and all(type(a) is int for a in args)):
            raise InvalidArchitecture(f"{what}: range() takes 1 to 3 integers")
        if any(abs(a) > 10**6 for a in args):
            raise InvalidArchitecture(f"{what}: range() bounds must lie within +-10**6")
        return list(range(*args))
    if node.kind == "dict":
        out = {}
        for k, v in node.items:
            key = _literal(k, what)
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise InvalidArchitecture(f"{what}: dict keys must be strings or numbers, got {short_repr(key)}")
            out[key] = _literal(v, what)
        return out
    raise InvalidArchitecture(f"{what} must be a literal, got {_source(node)}; {_HINT}")


def _name_key(text: str) -> str:
    return text.strip().upper().replace("-", "_")


def _check_cell(pairs: Any, which: str) -> tuple[Pair, ...]:
    if not isinstance(pairs, (list, tuple)):
        raise InvalidArchitecture(f"{which} must be a list of 8 (op, input) pairs, got {short_repr(pairs)}")
    if len(pairs) != 2 * N_NODES:
        raise InvalidArchitecture(
            f"{which} has {len(pairs)} pairs; it needs {2 * N_NODES} (two inputs for each of "
            f"the {N_NODES} intermediate nodes)")
    out = []
    for p, pair in enumerate(pairs):
        k = p // 2
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise InvalidArchitecture(f"{which} pair {p} must be (op, input), got {short_repr(pair)}")
        op, j = pair
        if not isinstance(op, str) or op not in OPS:
            raise InvalidArchitecture(
                f"unknown op {short_repr(op)} in {which} pair {p}; valid ops: {', '.join(OPS)}")
        if isinstance(j, np.integer):
            j = int(j)
        if type(j) is not int or not 0 <= j < k + 2:
            raise InvalidArchitecture(
                f"bad input {short_repr(j)} in {which} pair {p} {short_repr(tuple(pair))}: node {k} may use inputs "
                f"{', '.join(map(str, range(k + 2)))} (0 = c_(k-2), 1 = c_(k-1), j >= 2 = node j-2)")
        out.append((op, j))
    for k in range(N_NODES):
        if out[2 * k][1] == out[2 * k + 1][1]:
            raise InvalidArchitecture(
                f"{which} node {k} (pairs {2 * k}, {2 * k + 1}) uses input {out[2 * k][1]} twice; "
                f"the two inputs of a node must differ")
    return tuple(out)


def _check_concat(concat: Any, which: str) -> tuple[int, ...]:
    try:
        values = tuple(concat)
    except TypeError:
        values = None
    if values is None or values != CONCAT or not all(type(v) is int for v in values):
        raise InvalidArchitecture(
            f"{which} must be {list(CONCAT)} (all intermediate nodes) in the DARTS space, got {short_repr(concat)}")
    return CONCAT


def _coerce(obj: Any) -> Genotype:
    """Validate any genotype-like object (Genotype, namedtuple, dict, object with the fields)."""
    if isinstance(obj, dict):
        unknown = set(obj) - set(FIELDS)
        if unknown:
            raise InvalidArchitecture(f"unknown genotype field(s) {short_repr(sorted(unknown, key=str))}; fields: {', '.join(FIELDS)}")
        missing = [f for f in FIELDS if f not in obj]
        if missing:
            raise InvalidArchitecture(f"genotype is missing field(s) {', '.join(missing)}; {_HINT}")
        values = [obj[f] for f in FIELDS]
    elif all(hasattr(obj, f) for f in FIELDS):
        values = [getattr(obj, f) for f in FIELDS]
    else:
        raise InvalidArchitecture(f"cannot read a DARTS genotype from {type(obj).__name__}; {_HINT}")
    normal, normal_concat, reduce, reduce_concat = values
    return Genotype(_check_cell(normal, "normal"), _check_concat(normal_concat, "normal_concat"),
                    _check_cell(reduce, "reduce"), _check_concat(reduce_concat, "reduce_concat"))


def _parse_text(text: str) -> Genotype:
    key = _name_key(text)
    if key in _NAMED:
        return _NAMED[key]
    if not text.strip():
        raise InvalidArchitecture(f"cannot parse an empty DARTS genotype; {_HINT}")
    tree = _parse_tree(text)
    if tree.kind == "dict":
        keys = [_literal(k, "field name") for k, _ in tree.items]
        return _coerce({k: _literal(v, str(k)[:40]) for k, (_, v) in zip(keys, tree.items)})
    fname = None
    if tree.kind == "call" and tree.func is not None and tree.func.kind == "name":
        fname = tree.func.value.rsplit(".", 1)[-1]  # Genotype or genotypes.Genotype
    if fname != "Genotype":
        if tree.kind == "name":
            raise InvalidArchitecture(
                f"unknown genotype name {short_repr(text.strip())}; known names: {', '.join(_NAMED)}")
        raise InvalidArchitecture(f"not a DARTS genotype: {short_repr(text)}; {_HINT}")
    if len(tree.items) > len(FIELDS):
        raise InvalidArchitecture(f"Genotype takes {len(FIELDS)} fields, got {len(tree.items)} positional")
    fields: dict[str, Any] = {}
    for name, arg in zip(FIELDS, tree.items):
        fields[name] = _literal(arg, name)
    for kw, value in tree.keywords:
        if kw not in FIELDS:
            raise InvalidArchitecture(
                f"unknown Genotype field {short_repr(kw)}; fields: {', '.join(FIELDS)}")
        if kw in fields:
            raise InvalidArchitecture(f"Genotype field {kw!r} given twice")
        fields[kw] = _literal(value, kw)
    return _coerce(fields)


# ===================================================================== the space
class DartsSpace(SearchSpace):
    """The DARTS cell space with string genotypes; see the module docstring for conventions."""

    name = "darts"
    ops = OPS

    def parse(self, arch: str) -> Genotype:
        return _parse_text(check_arch_text(arch, "DARTS"))

    def format(self, obj: Any) -> str:
        """Canonical string of a :class:`Genotype` (or namedtuple / dict / string)."""
        g = self.parse(obj) if isinstance(obj, str) else _coerce(obj)
        return _fmt(g)

    def _geno(self, arch: Any) -> Genotype:
        return self.parse(arch) if isinstance(arch, str) else _coerce(arch)

    # ----------------------------------------------------------------- random moves
    def sample(self, rng: RNGLike = None) -> str:
        """Uniform over the space: for each node an ordered pair of distinct inputs, two ops."""
        g = as_rng(rng)
        cells = []
        for _ in range(2):
            pairs: list[Pair] = []
            for k in range(N_NODES):
                a, b = g.choice(k + 2, size=2, replace=False).tolist()
                ops = g.integers(len(OPS), size=2).tolist()
                pairs += [(OPS[ops[0]], a), (OPS[ops[1]], b)]
            cells.append(tuple(pairs))
        return _fmt(Genotype(cells[0], CONCAT, cells[1], CONCAT))

    def neighbours(self, arch: str) -> list[str]:
        geno = self._geno(arch)
        out = []
        for c, field in ((0, "normal"), (2, "reduce")):
            pairs = list(geno[c])
            for p, (op, j) in enumerate(pairs):
                other = pairs[p ^ 1][1]
                for new_op in OPS:
                    if new_op != op:
                        out.append(_fmt(geno._replace(**{field: tuple(pairs[:p] + [(new_op, j)] + pairs[p + 1:])})))
                for new_j in range(p // 2 + 2):
                    if new_j not in (j, other):
                        out.append(_fmt(geno._replace(**{field: tuple(pairs[:p] + [(op, new_j)] + pairs[p + 1:])})))
        return out

    def distance(self, a: str, b: str) -> int:
        """Number of single edits (one op or one input of one pair) between ``a`` and ``b``."""
        ga, gb = self._geno(a), self._geno(b)
        return sum((pa[0] != pb[0]) + (pa[1] != pb[1])
                   for c in (0, 2) for pa, pb in zip(ga[c], gb[c]))

    # ----------------------------------------------------------------- identity
    def canonical(self, arch: str) -> str:
        """The representative of ``arch``'s class: each node's two pairs sorted by (input,
        op index). ``hash`` uses it; permutations of the intermediate nodes count as
        different architectures (see the module docstring)."""
        geno = self._geno(arch)

        def sort_nodes(pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
            out: list[Pair] = []
            for k in range(N_NODES):
                out += sorted(pairs[2 * k:2 * k + 2], key=lambda p: (p[1], OPS.index(p[0])))
            return tuple(out)

        return _fmt(geno._replace(normal=sort_nodes(geno.normal), reduce=sort_nodes(geno.reduce)))

    # ----------------------------------------------------------------- vectors
    @property
    def encoding_choices(self) -> list[int]:
        per_cell = [c for k in range(N_NODES) for c in (len(OPS), k + 2, len(OPS), k + 1)]
        return per_cell * 2

    def encode(self, arch: str) -> np.ndarray:
        geno = self._geno(arch)
        vec = []
        for pairs in (geno.normal, geno.reduce):
            for k in range(N_NODES):
                (op_a, a), (op_b, b) = pairs[2 * k], pairs[2 * k + 1]
                vec += [OPS.index(op_a), a, OPS.index(op_b), b if b < a else b - 1]
        return np.array(vec, dtype=np.int64)

    def decode(self, vec: Any) -> str:
        arr = self._check_vector(vec).tolist()
        cells = []
        for c in range(2):
            pairs: list[Pair] = []
            for k in range(N_NODES):
                op_a, a, op_b, rank_b = arr[16 * c + 4 * k:16 * c + 4 * k + 4]
                b = rank_b if rank_b < a else rank_b + 1
                pairs += [(OPS[op_a], a), (OPS[op_b], b)]
            cells.append(tuple(pairs))
        return _fmt(Genotype(cells[0], CONCAT, cells[1], CONCAT))

    # ----------------------------------------------------------------- models
    def build(self, arch: Any, C: int = 16, layers: int = 8, num_classes: int = 10,
              auxiliary: bool = False, drop_path_prob: float = 0.0) -> "NetworkCIFAR":
        """Build the DARTS CIFAR network of ``arch`` (see :func:`build_network`)."""
        return build_network(arch, C=C, layers=layers, num_classes=num_classes,
                             auxiliary=auxiliary, drop_path_prob=drop_path_prob)


# ===================================================================== network
class SepConv(nn.Module):
    """Two stacked ReLU -> depthwise kxk -> 1x1 -> BN blocks (stride on the first only)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise kxk -> 1x1 -> BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs, the second shifted by one pixel."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


def _make_op(name: str, C: int, stride: int) -> nn.Module:
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return AvgPool(3, stride=stride, padding=1)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(C, C)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(name[-1])
        return SepConv(C, C, k, stride, k // 2)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(name[-1])
        return DilConv(C, C, k, stride, k - k % 2, 2)
    raise InvalidArchitecture(f"unknown op {name!r}; valid ops: {', '.join(OPS)}")


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """One DARTS cell: two preprocessed inputs, 4 nodes of two ops each, concat of nodes 2..5."""

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        pairs = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self._steps = len(pairs) // 2
        self._concat = tuple(concat)
        self.multiplier = len(self._concat)
        self._indices = tuple(j for _, j in pairs)
        self._ops = nn.ModuleList(
            _make_op(op, C, 2 if reduction and j < 2 else 1) for op, j in pairs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        for i in range(self._steps):
            op1, op2 = self._ops[2 * i], self._ops[2 * i + 1]
            h1 = op1(states[self._indices[2 * i]])
            h2 = op2(states[self._indices[2 * i + 1]])
            if self.training and drop_prob > 0:
                if not isinstance(op1, nn.Identity):
                    h1 = drop_path(h1, drop_prob)
                if not isinstance(op2, nn.Identity):
                    h2 = drop_path(h2, drop_prob)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS' auxiliary classifier for 8x8 inputs (used in training only)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.reshape(x.size(0), -1))


class NetworkCIFAR(nn.Module):
    """The DARTS CIFAR evaluation network, laid out as GHN-2's reference ``Network``."""

    def __init__(self, genotype: Genotype, C: int = 16, layers: int = 8, num_classes: int = 10,
                 auxiliary: bool = False, drop_path_prob: float = 0.0):
        super().__init__()
        if C < 1 or layers < 1 or num_classes < 1:
            raise ValueError(f"need C >= 1, layers >= 1, num_classes >= 1; got C={C}, layers={layers}, "
                             f"num_classes={num_classes}")
        if not 0.0 <= drop_path_prob < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
        self.genotype = genotype
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = drop_path_prob  # DARTS training scripts update it every epoch
        self.expected_input_sz = 32  # read by GHN graph tracing (ppuda convention)

        C_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))

        def is_reduction(i: int) -> bool:
            return i > 0 and i in (layers // 3, 2 * layers // 3)

        self._aux_index = 2 * layers // 3
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = is_reduction(i)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if auxiliary and i == self._aux_index:
                self.auxiliary_head = AuxiliaryHeadCIFAR(C_prev, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(C_prev, num_classes))

    def forward(self, x: torch.Tensor):
        s0 = s1 = self.stem(x)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if self._auxiliary and self.training and i == self._aux_index:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        logits = self.classifier(out.reshape(out.size(0), -1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits


def build_network(arch: Any, C: int = 16, layers: int = 8, num_classes: int = 10,
                  auxiliary: bool = False, drop_path_prob: float = 0.0) -> NetworkCIFAR:
    """Build the DARTS CIFAR network for ``arch`` (string, name or genotype).

    DARTS' CIFAR-10 evaluation setting is ``C=36, layers=20, auxiliary=True,
    drop_path_prob=0.2``; GHN-2's parity fixture uses ``C=16, layers=8``.
    """
    geno = DartsSpace()._geno(arch)
    return NetworkCIFAR(geno, C=C, layers=layers, num_classes=num_classes,
                        auxiliary=auxiliary, drop_path_prob=drop_path_prob)
