"""Kotlin source -> signature stub: the same public and protected declarations (classes, objects,
enums with their entries, constructors, functions, properties, constants) with every body replaced
by `stub()`, private and internal members and annotations dropped, written as source that old
Debian kotlinc (1.3) compiles (no trailing commas). Written for the declaration subset the ExecuTorch and
LiteRT Android APIs use; anything outside it raises StubError instead of emitting a wrong stub."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

STUB_FUNCTION = "ktedge.stubs.stub"
STUB_HELPER = '''package ktedge.stubs

/** Every stubbed body: these classes are compiled against, never run. */
fun <T> stub(): T = throw UnsupportedOperationException("signature stub: compile-time only")
'''

MODIFIERS = {"public", "private", "protected", "internal", "open", "abstract", "final", "override", "data",
             "enum", "sealed", "inner", "companion", "const", "lateinit", "external", "suspend", "inline",
             "operator", "infix", "tailrec", "vararg", "noinline", "crossinline", "annotation", "value"}
DECL_WORDS = MODIFIERS | {"fun", "val", "var", "class", "interface", "object", "constructor", "init", "typealias"}
# `external` goes because every stub has a body; `public` is the default.
DROPPED = {"external", "public"}
HIDDEN = {"private", "internal"}


class StubError(Exception):
    pass


@dataclass
class Tok:
    kind: str  # id, num, str, op, nl
    text: str


@dataclass
class Param:
    mods: list[str]
    binding: str | None  # val, var or None
    name: str
    type: str
    has_default: bool


@dataclass
class Decl:
    kind: str  # class, fun, prop, ctor, entry
    mods: list[str]
    name: str = ""
    keyword: str = ""  # class / interface / object for kind == class
    type_params: str = ""
    receiver: str = ""
    params: list[Param] = field(default_factory=list)
    type: str = ""  # return or property type
    has_body: bool = False
    init_literal: str | None = None  # const val initializer
    supers: list[tuple[str, str | None]] = field(default_factory=list)  # (type, ctor args or None)
    delegation: str = ""  # secondary ctor ": this(...)"
    primary: Decl | None = None
    members: list[Decl] = field(default_factory=list)
    entries: list[Decl] = field(default_factory=list)
    args: str = ""  # enum entry arguments
    setter_mods: list[str] | None = None  # property setter visibility, when the source declares one
    init_expr: list[Tok] | None = None  # an untyped declaration's initializer or expression body
    interface_member: bool = False  # set by the enclosing class when rendering


# ---------------------------------------------------------------------------------------- tokens

_NUM = re.compile(r"0[xXbB][0-9a-fA-F_]+[uUL]*|[0-9][0-9_]*(\.[0-9][0-9_]*)?([eE][+-]?[0-9]+)?[fFdDLuU]*")
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHAR = re.compile(r"'(\\u[0-9a-fA-F]{4}|\\.|[^'\\])'")
_OPS = ("===", "!==", "?.", "?:", "::", "->", "..", "==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "*=",
        "/=", "!!", "++", "--")


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "\n":
            if toks and toks[-1].kind != "nl":
                toks.append(Tok("nl", "\n"))
            i += 1
        elif c in " \t\r\f":
            i += 1
        elif src.startswith("//", i):
            end = src.find("\n", i)
            i = n if end < 0 else end
        elif src.startswith("/*", i):
            i = _skip_block_comment(src, i)
        elif src.startswith('"""', i):
            end = src.find('"""', i + 3)
            if end < 0:
                raise StubError("unterminated raw string")
            while src.startswith('"', end + 3):
                end += 1
            toks.append(Tok("str", src[i:end + 3]))
            i = end + 3
        elif c == '"':
            end = _skip_string(src, i)
            toks.append(Tok("str", src[i:end]))
            i = end
        elif c == "'":
            m = _CHAR.match(src, i)
            if not m:
                raise StubError(f"bad char literal at {i}")
            toks.append(Tok("str", m.group(0)))
            i = m.end()
        elif c == "`":
            end = src.index("`", i + 1)
            toks.append(Tok("id", src[i:end + 1]))
            i = end + 1
        elif c.isdigit():
            m = _NUM.match(src, i)
            toks.append(Tok("num", m.group(0)))
            i = m.end()
        elif c.isalpha() or c == "_":
            m = _ID.match(src, i)
            toks.append(Tok("id", m.group(0)))
            i = m.end()
        else:
            op = next((o for o in _OPS if src.startswith(o, i)), c)
            toks.append(Tok("op", op))
            i += len(op)
    return toks


def _skip_block_comment(src: str, i: int) -> int:
    depth = 0
    while i < len(src):
        if src.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif src.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise StubError("unterminated comment")


def _skip_string(src: str, i: int) -> int:
    """Index after the '"' string starting at i, templates ${...} included."""
    i += 1
    while i < len(src):
        c = src[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        elif src.startswith("${", i):
            depth, i = 1, i + 2
            while depth:
                if src[i] == '"':
                    i = _skip_string(src, i)
                    continue
                depth += {"{": 1, "}": -1}.get(src[i], 0)
                i += 1
        else:
            i += 1
    raise StubError("unterminated string")


# ---------------------------------------------------------------------------------------- parser

class Parser:
    def __init__(self, src: str):
        self.t = tokenize(src) + [Tok("eof", "")]
        self.i = 0

    # -- token helpers
    def peek(self, skip_nl: bool = False) -> Tok:
        j = self.i
        while skip_nl and self.t[j].kind == "nl":
            j += 1
        return self.t[j]

    def next(self) -> Tok:
        tok = self.t[self.i]
        self.i += 1
        return tok

    def nl(self) -> None:
        while self.t[self.i].kind == "nl":
            self.i += 1

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text:
            raise StubError(f"expected {text!r}, got {tok.text!r} near {self.context()}")

    def context(self) -> str:
        return " ".join(t.text for t in self.t[max(0, self.i - 8):self.i + 8] if t.kind != "nl")

    def skip_balanced(self) -> list[Tok]:
        """At an opening bracket: consume through its match; -> the tokens inside."""
        opening = self.next().text
        close = {"(": ")", "[": "]", "{": "}", "<": ">"}[opening]
        depth, inner = 1, []
        while True:
            tok = self.next()
            if tok.kind == "eof":
                raise StubError(f"unbalanced {opening}")
            if tok.text == opening:
                depth += 1
            elif tok.text == close:
                depth -= 1
                if depth == 0:
                    return inner
            inner.append(tok)

    def skip_expression(self, stop: tuple[str, ...] = ()) -> list[Tok]:
        """An expression (a body after '=', an initializer, a default): up to a closing bracket it
        does not own, a `stop` token at depth 0, or a line break followed by a new declaration."""
        self.nl()
        depth, out = 0, []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                return out
            if depth == 0 and tok.text in stop:
                return out
            if tok.kind == "op" and tok.text in ("(", "[", "{"):
                depth += 1
            elif tok.kind == "op" and tok.text in (")", "]", "}"):
                if depth == 0:
                    return out
                depth -= 1
            elif tok.kind == "nl" and depth == 0:
                after = self.peek(skip_nl=True)
                if after.kind == "eof" or after.text in ("}", ";", "@") or after.text in DECL_WORDS:
                    return out
            out.append(self.next())

    # -- declarations
    def parse_file(self) -> tuple[str, list[str], list[Decl]]:
        self.nl()
        package, imports = "", []
        while self.peek(True).text in ("package", "import") or self.peek(True).text == "@":
            self.nl()
            if self.peek().text == "@":  # file annotation
                self.annotations()
                continue
            word = self.next().text
            parts = []
            while self.peek().kind not in ("nl", "eof") and self.peek().text != ";":
                tok = self.next()
                parts.append(" as " if tok.text == "as" else tok.text)
            if word == "package":
                package = "".join(parts)
            else:
                imports.append("".join(parts))
        decls = self.members(until_eof=True)
        return package, imports, decls

    def annotations(self) -> None:
        while self.peek(True).text == "@":
            self.nl()
            self.next()
            self.next()  # name or use-site target
            if self.peek().text == ":":
                self.next()
                self.next()
            while self.peek().text == ".":
                self.next()
                self.next()
            if self.peek().text == "(":
                self.skip_balanced()

    def modifiers(self) -> list[str]:
        mods = []
        while True:
            self.annotations()
            tok = self.peek(True)
            # `enum`, `data`, ... are soft keywords: modifiers only when a declaration follows.
            if tok.kind == "id" and tok.text in MODIFIERS and self._followed_by_decl():
                self.nl()
                mods.append(self.next().text)
            else:
                return mods

    def _followed_by_decl(self) -> bool:
        j = self.i
        while self.t[j].kind == "nl":
            j += 1
        nxt = self.t[j + 1]
        return nxt.text in DECL_WORDS or nxt.text == "@"

    def members(self, until_eof: bool = False) -> list[Decl]:
        out: list[Decl] = []
        while True:
            self.nl()
            tok = self.peek()
            if tok.text == ";":
                self.next()
                continue
            if tok.kind == "eof" or (tok.text == "}" and not until_eof):
                return out
            decl = self.declaration()
            if decl is not None:
                out.append(decl)

    def declaration(self) -> Decl | None:
        mods = self.modifiers()
        self.nl()
        word = self.next().text
        if word in ("class", "interface", "object"):
            return self.class_decl(mods, word)
        if word == "fun":
            return self.fun_decl(mods)
        if word in ("val", "var"):
            return self.prop_decl(mods, word)
        if word == "constructor":
            return self.ctor_decl(mods)
        if word == "init":
            self.nl()
            self.skip_balanced()
            return None
        raise StubError(f"unsupported declaration {word!r} near {self.context()}")

    def class_decl(self, mods: list[str], keyword: str) -> Decl:
        d = Decl("class", mods, keyword=keyword)
        if self.peek().kind == "id":
            d.name = self.next().text
        if self.peek().text == "<":
            d.type_params = "<" + render_tokens(self.skip_balanced()) + ">"
        mark = self.i
        ctor_mods = self.modifiers()
        if self.peek(True).text == "constructor":
            self.nl()
            self.next()
            d.primary = Decl("ctor", ctor_mods, params=self.params())
        elif self.i == mark and self.peek().text == "(":
            d.primary = Decl("ctor", [], params=self.params())
        else:
            self.i = mark
        if self.peek(True).text == ":":
            self.nl()
            self.next()
            d.supers = self.supertypes()
        if self.peek(True).text == "{":
            self.nl()
            self.next()
            if "enum" in mods:
                d.entries = self.enum_entries()
            d.members = self.members()
            self.expect("}")
        return d

    def supertypes(self) -> list[tuple[str, str | None]]:
        out = []
        while True:
            self.nl()
            typ = self.type()
            args = None
            if self.peek().text == "(":
                args = render_tokens(self.skip_balanced())
            out.append((typ, args))
            if self.peek(True).text != ",":
                return out
            self.nl()
            self.next()

    def enum_entries(self) -> list[Decl]:
        entries = []
        while True:
            self.nl()
            self.annotations()
            self.nl()
            tok = self.peek()
            if tok.text == ";":
                self.next()
                return entries
            if tok.text == "}":
                return entries
            e = Decl("entry", [], name=self.next().text)
            if self.peek().text == "(":
                e.args = "(" + render_tokens(self.skip_balanced()) + ")"
            if self.peek(True).text == "{":
                raise StubError(f"enum entry {e.name} has a body: unsupported")
            entries.append(e)
            if self.peek(True).text == ",":
                self.nl()
                self.next()

    def params(self) -> list[Param]:
        self.expect("(")
        out = []
        while True:
            self.nl()
            if self.peek().text == ")":
                self.next()
                return out
            mods = []
            while True:
                self.annotations()
                self.nl()
                tok = self.peek()
                if tok.text in MODIFIERS and self.t[self.i + 1].kind == "id":
                    mods.append(self.next().text)
                else:
                    break
            binding = None
            if self.peek().text in ("val", "var"):
                binding = self.next().text
            name = self.next().text
            self.expect(":")
            typ = self.type()
            has_default = False
            if self.peek(True).text == "=":
                self.nl()
                self.next()
                self.skip_expression(stop=(",",))
                has_default = True
            out.append(Param(mods, binding, name, typ, has_default))
            self.nl()
            if self.peek().text == ",":
                self.next()

    def type(self) -> str:
        """A type reference -> its text (generic arguments, nullability and function types kept)."""
        self.nl()
        parts = []
        self.annotations()
        if self.peek().text == "suspend":
            parts.append(self.next().text + " ")
        if self.peek().text == "(":
            inner = self.skip_balanced()
            parts.append("(" + render_tokens(inner) + ")")
            if self.peek().text == "->":
                self.next()
                parts.append(" -> " + self.type())
        else:
            parts.append(self.next().text)
            while True:
                if self.peek().text == "<":
                    parts.append("<" + render_tokens(self.skip_balanced()) + ">")
                elif self.peek().text == "." and self.t[self.i + 1].kind == "id":
                    self.next()
                    parts.append("." + self.next().text)
                else:
                    break
        while self.peek().text == "?":
            parts.append(self.next().text)
        return "".join(parts)

    def fun_decl(self, mods: list[str]) -> Decl:
        d = Decl("fun", mods)
        if self.peek().text == "<":
            d.type_params = "<" + render_tokens(self.skip_balanced()) + "> "
        head = []
        while self.peek().text != "(":
            head.append(self.next())
        d.name = head[-1].text
        d.receiver = render_tokens(head[:-2]) + "." if len(head) > 1 else ""
        d.params = self.params()
        if self.peek().text == ":":
            self.next()
            d.type = self.type()
        d.has_body, d.init_expr = self.body()
        return d

    def body(self) -> tuple[bool, list[Tok] | None]:
        """-> (has a body, the expression tokens of an `= expr` body)."""
        if self.peek(True).text == "{":
            self.nl()
            self.skip_balanced()
            return True, None
        if self.peek(True).text == "=":
            self.nl()
            self.next()
            return True, self.skip_expression()
        return False, None

    def ctor_decl(self, mods: list[str]) -> Decl:
        d = Decl("ctor", mods, params=self.params())
        if self.peek(True).text == ":":
            self.nl()
            self.next()
            self.nl()
            word = self.next().text
            d.delegation = f"{word}({render_tokens(self.skip_balanced())})"
        if self.peek(True).text == "{":
            self.nl()
            self.skip_balanced()
        return d

    def prop_decl(self, mods: list[str], word: str) -> Decl:
        d = Decl("prop", mods + [word])
        d.name = self.next().text
        if self.peek().text == ":":
            self.next()
            d.type = self.type()
        if self.peek().text in ("=", "by"):
            self.next()
            expr = self.skip_expression()
            d.has_body = True
            if "const" in mods:
                d.init_literal = render_tokens(expr)
            d.init_expr = expr
        self.accessors(d)
        return d

    def accessors(self, d: Decl) -> None:
        while True:
            mark = self.i
            self.nl()
            self.annotations()
            mods = []
            while self.peek().text in MODIFIERS:
                mods.append(self.next().text)
            word = self.peek().text
            if word not in ("get", "set"):
                self.i = mark
                return
            self.next()
            if word == "set":
                d.setter_mods = mods
            if self.peek().text == "(":
                self.skip_balanced()
            if self.peek().text == ":":
                self.next()
                self.type()
            has_body, _ = self.body()
            d.has_body = d.has_body or has_body


def infer_type(expr: list[Tok], name: str, classes: set[str]) -> str:
    """The type of an untyped declaration, read off its initializer where that is unambiguous: a
    literal, an object expression, or a call of a constructor of a class declared in the file."""
    first = expr[0] if expr else Tok("eof", "")
    if first.text in ("true", "false") and len(expr) == 1:
        return "Boolean"
    if first.kind == "str" and len(expr) == 1:
        return "String"
    if first.kind == "num" and len(expr) == 1:
        if first.text.endswith("L"):
            return "Long"
        if first.text[-1] in "fF":
            return "Float"
        return "Double" if "." in first.text else "Int"
    if first.text == "object" and len(expr) > 2 and expr[1].text == ":":
        return expr[2].text
    if first.text in classes and len(expr) > 1 and expr[1].text == "(":
        return first.text
    raise StubError(f"{name}: no declared type and none to read off its initializer")


_TIGHT_BEFORE = {".", ",", ")", "]", ">", "?", "!!", "::", "?.", ":"}
_TIGHT_AFTER = {".", "(", "[", "<", "::", "?."}


def render_tokens(toks: list[Tok]) -> str:
    """Tokens -> source text with conventional spacing (types, arguments, literals)."""
    toks = [t for t in toks if t.kind != "nl"]
    out = ""
    for k, tok in enumerate(toks):
        prev = toks[k - 1] if k else None
        tight = prev is None
        if prev is not None:
            op, prev_op = tok.kind == "op", prev.kind == "op"
            tight = (op and tok.text in _TIGHT_BEFORE) or (prev_op and prev.text in _TIGHT_AFTER)
            tight |= op and tok.text in ("(", "<") and (prev.kind == "id" or prev.text in (")", ">"))
            # spread: `f(*xs)`, `f(a, *xs)`
            tight |= prev_op and prev.text == "*" and (k < 2 or toks[k - 2].text in ("(", ","))
        out += ("" if tight else " ") + tok.text
    return out


# -------------------------------------------------------------------------------------- renderer

def visible(d: Decl) -> bool:
    return not (set(d.mods) & HIDDEN)


def walk(decls: list[Decl]):
    for d in decls:
        yield d
        yield from walk(d.members)


def stub_file(src: str, header: str) -> str:
    """A Kotlin source file -> its signature stub (header: a comment naming where it came from)."""
    package, imports, decls = Parser(src).parse_file()
    body = Renderer(decls).render(decls)
    used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", body))
    # An import stays only where the stub still names it: those that only bodies used (Android
    # logging, JNI plumbing) would otherwise need stubs of their own.
    kept = [imp for imp in imports if imp.split(" as ")[-1].split(".")[-1] in used]
    if "stub()" in body:
        kept.insert(0, STUB_FUNCTION)
    lines = [header, f"package {package}", "", *[f"import {imp}" for imp in kept], "", body.rstrip()]
    return "\n".join(lines) + "\n"


def _mods(mods: list[str]) -> str:
    kept = [m for m in mods if m not in DROPPED and m not in ("val", "var")]
    return " ".join(kept) + (" " if kept else "")


class Renderer:
    def __init__(self, decls: list[Decl]):
        every = list(walk(decls))
        self.dropped = {d.name for d in every if not visible(d)}
        self.classes = {d.name for d in every if d.kind == "class"}

    def render(self, decls: list[Decl]) -> str:
        """Top-level declarations, a blank line apart."""
        return "\n".join(self.decl(d, 0) for d in decls if visible(d))

    def decl(self, d: Decl, depth: int) -> str:
        pad = "    " * depth
        if d.kind == "class":
            return self.klass(d, depth)
        if d.kind == "ctor":
            delegation = f" : {d.delegation}" if d.delegation else ""
            return f"{pad}{_mods(d.mods)}constructor({self.params(d.params, False)}){delegation}\n"
        typ = d.type or (infer_type(d.init_expr, d.name, self.classes) if d.init_expr is not None else "Unit")
        abstract = not d.has_body and ("abstract" in d.mods or d.interface_member)
        if d.kind == "fun":
            head = f"{pad}{_mods(d.mods)}fun {d.type_params}{d.receiver}{d.name}({self.params(d.params, False)})"
            return f"{head}: {typ}\n" if abstract else f"{head}: {typ} = stub()\n"
        word = "var" if "var" in d.mods else "val"
        head = f"{pad}{_mods(d.mods)}{word} {d.name}: {typ}"
        if d.init_literal is not None:
            return f"{head} = {d.init_literal}\n"
        if abstract or "lateinit" in d.mods:
            return f"{head}\n"
        setter = f"\n{pad}    {_mods(d.setter_mods or [])}set(value) {{}}" if word == "var" else ""
        return f"{head}\n{pad}    get() = stub(){setter}\n"

    @staticmethod
    def params(params: list[Param], data_class: bool) -> str:
        """Defaults become `stub()` (a default's presence is API, its value is not). A private or
        internal `val` in a constructor is a plain parameter to callers, except in a data class,
        which must keep its properties."""
        out = []
        for p in params:
            hidden = bool(set(p.mods) & HIDDEN)
            binding = p.binding if p.binding and (data_class or not hidden) else None
            mods = [m for m in p.mods if m in ("vararg", "override", "protected", "open")
                    or (binding and m in HIDDEN)]
            text = _mods(mods) + (f"{binding} " if binding else "") + f"{p.name}: {p.type}"
            out.append(text + (" = stub()" if p.has_default else ""))
        return ", ".join(out)

    def klass(self, d: Decl, depth: int) -> str:
        pad = "    " * depth
        head = f"{pad}{_mods(d.mods)}{d.keyword}"
        if d.name:
            head += f" {d.name}{d.type_params}"
        if d.primary is not None:
            ctor_mods = _mods(d.primary.mods)
            ctor = f" {ctor_mods}constructor" if ctor_mods else ""
            head += f"{ctor}({self.params(d.primary.params, 'data' in d.mods)})"
        if d.supers:
            head += " : " + ", ".join(self.supertype(t, a) for t, a in d.supers)
        # Constructors stay whatever their visibility: a private one is what keeps callers from
        # constructing the class.
        members = [m for m in d.members if visible(m) or m.kind == "ctor"]
        for m in members:
            m.interface_member = d.keyword == "interface"
        if not members and not d.entries:
            return head + "\n"
        lines = [head + " {"]
        if d.entries:
            lines.append(",\n".join(f"{pad}    {e.name}{e.args}" for e in d.entries) + (";" if members else ""))
        lines += [self.decl(m, depth + 1).rstrip("\n") for m in members]
        return "\n".join(lines) + f"\n{pad}}}\n"

    def supertype(self, typ: str, args: str | None) -> str:
        """A supertype with its constructor call. Arguments that reach into dropped (private)
        members cannot be kept: the call is then made with none, which the stub compile rejects
        if the supertype has no such constructor."""
        if args is None:
            return typ
        names = set(re.findall(r"(?<![.\w])[A-Za-z_]\w*", args))
        return f"{typ}()" if names & self.dropped else f"{typ}({args})"
