"""A safe evaluator for the integer arithmetic that model responses contain.

Model output is untrusted text: it is never handed to ``eval``/``exec``/``ast``. This module tokenizes
and parses it with a small recursive-descent grammar and bounds every resource an adversarial string
could spend (length, nesting, literal size, magnitude), so a response such as ``9^9^9`` or
``__import__('os')...`` fails fast with a reason instead of hanging or running code.

Grammar (``x`` and ``*`` both multiply; division must be exact)::

    expr  := term (('+' | '-') term)*
    term  := unary (('*' | 'x' | '/') unary)*
    unary := '-' unary | atom
    atom  := NUMBER | '(' expr ')'
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LENGTH = 200  # characters in one expression
MAX_DEPTH = 16  # nested parentheses plus chained unary minus
MAX_DIGITS = 12  # digits in one integer literal
MAX_ABS = 10**12  # bound on every intermediate value

_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() also accepts '²' and other scripts' digits
_OPERATORS = {"+": "+", "-": "-", "*": "*", "x": "*", "/": "/", "(": "(", ")": ")"}


class ParseError(ValueError):
    """The text is not a well-formed, bounded integer expression; the message says why."""


@dataclass(frozen=True)
class Evaluation:
    value: int  # the expression's value
    literals: tuple[int, ...]  # the integer literals it uses, in order of appearance


def _tokenize(text: str) -> list[str | int]:
    """Integers and operator symbols (``x`` normalised to ``*``); anything else is rejected."""
    tokens: list[str | int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t":
            i += 1
        elif ch in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            digits = text[i:j]
            if len(digits) > MAX_DIGITS:
                raise ParseError(f"number literal longer than {MAX_DIGITS} digits")
            if len(digits) > 1 and digits[0] == "0":
                raise ParseError(f"number literal with a leading zero: '{digits}'")
            if j < n and text[j] in ".,":
                raise ParseError(f"only integers are allowed; found '{text[j]}' after '{digits}'")
            tokens.append(int(digits))
            i = j
        elif text.startswith("**", i) or ch == "^":
            raise ParseError("powers ('^', '**') are not allowed")
        elif ch in _OPERATORS:
            tokens.append(_OPERATORS[ch])
            i += 1
        else:
            raise ParseError(f"character {ch!r} is not allowed in an expression")
    return tokens


def _checked(value: int) -> int:
    if abs(value) > MAX_ABS:
        raise ParseError(f"value exceeds {MAX_ABS:.0e} in magnitude")
    return value


def _divide(a: int, b: int) -> int:
    if b == 0:
        raise ParseError("division by zero")
    if a % b:
        raise ParseError(f"{a}/{b} is not an exact integer division")
    return a // b


class _Parser:
    """Recursive descent over a token list; records literals as they are read."""

    def __init__(self, tokens: list[str | int]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.literals: list[int] = []

    def peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | int | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def expr(self, depth: int) -> int:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term(depth)
            value = _checked(value + rhs if op == "+" else value - rhs)
        return value

    def term(self, depth: int) -> int:
        value = self.unary(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.unary(depth)
            value = _checked(value * rhs if op == "*" else _divide(value, rhs))
        return value

    def unary(self, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ParseError(f"expression nested deeper than {MAX_DEPTH} levels")
        if self.peek() == "-":
            self.take()
            return -self.unary(depth + 1)
        return self.atom(depth)

    def atom(self, depth: int) -> int:
        tok = self.take()
        if isinstance(tok, int):
            self.literals.append(tok)
            return _checked(tok)
        if tok == "(":
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ParseError("unbalanced parentheses: missing ')'")
            return value
        if tok is None:
            raise ParseError("expression ends where a number was expected")
        raise ParseError(f"unexpected '{tok}' where a number was expected")


def evaluate(text: str) -> Evaluation:
    """Value and literals of an integer expression; raises ParseError with a reason if it is not one."""
    if len(text) > MAX_LENGTH:
        raise ParseError(f"expression longer than {MAX_LENGTH} characters")
    tokens = _tokenize(text)
    if not tokens:
        raise ParseError("empty expression")
    parser = _Parser(tokens)
    value = parser.expr(0)
    if parser.pos < len(tokens):
        raise ParseError(f"unexpected '{tokens[parser.pos]}' after a complete expression")
    return Evaluation(value, tuple(parser.literals))


def parse_int(text: str) -> int:
    """A plain integer literal with an optional leading minus (a step's value or an answer)."""
    body = text.strip()
    digits = body.removeprefix("-")
    if not digits or any(ch not in _DIGITS for ch in digits):
        raise ParseError(f"'{body}' is not an integer")
    if len(digits) > MAX_DIGITS:
        raise ParseError(f"number literal longer than {MAX_DIGITS} digits")
    if len(digits) > 1 and digits[0] == "0":
        raise ParseError(f"number literal with a leading zero: '{digits}'")
    return int(body)
