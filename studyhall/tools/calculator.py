"""A safe arithmetic calculator and an arithmetic checker for written solutions.

Evaluates +, -, *, /, //, %, ** and parentheses on numbers through the AST (never
``eval``), with bounds on exponent and result size. ``check_arithmetic`` finds lines like
``48 / 2 = 24`` and reports those whose left side does not equal the right side — the
verifier uses it to re-check a candidate solution's arithmetic.
"""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

from pydantic import BaseModel

_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPONENT = 64
MAX_MAGNITUDE = Fraction(10) ** 30


class CalculatorError(ValueError):
    pass


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (right.denominator != 1 or abs(right) > MAX_EXPONENT):
            raise CalculatorError("exponent too large or not an integer")
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise CalculatorError("division by zero")
        value = _OPS[type(node.op)](left, right)
        value = Fraction(value)
        if abs(value) > MAX_MAGNITUDE:
            raise CalculatorError("result too large")
        return value
    raise CalculatorError(f"not arithmetic: {ast.dump(node)[:60]}")


def _clean(expr: str) -> str:
    s = expr.replace("×", "*").replace("x", "*").replace("X", "*").replace("÷", "/").replace("^", "**")
    s = s.replace("$", "").replace(",", "").replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    s = re.sub(r"(\d)\s*%", r"(\1/100)", s)
    return s.strip()


def calculate(expr: str) -> Fraction:
    """Exact value of an arithmetic expression; CalculatorError if it is not one."""
    try:
        tree = ast.parse(_clean(expr), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"cannot parse {expr!r}") from exc
    return _eval(tree)


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return format(float(value), ".6g")


class ArithmeticSlip(BaseModel):
    line: int  # 1-based line number in the solution
    expression: str
    claimed: str
    actual: str


_EQUATION = re.compile(r"([\d\s.,+\-*/×x÷()$^%]+?)\s*=\s*\$?\s*(-?[\d,]*\.?\d+)")


def check_arithmetic(solution: str) -> list[ArithmeticSlip]:
    """Every ``expression = number`` in the text whose value is wrong (to 1e-6, relative)."""
    slips: list[ArithmeticSlip] = []
    for lineno, line in enumerate(solution.splitlines(), 1):
        for m in _EQUATION.finditer(line):
            expr, claimed = m.group(1).strip(), m.group(2)
            if not re.search(r"\d\s*[-+*/×x÷^]\s*\(?\s*\$?\d", expr):
                continue  # a bare number, not a calculation
            try:
                actual = calculate(expr)
                stated = Fraction(claimed.replace(",", ""))
            except (CalculatorError, ValueError, ZeroDivisionError):
                continue
            tolerance = max(abs(actual), Fraction(1)) * Fraction(1, 10**6)
            # Rounded statements ("= 3.33") are fine; a wrong value is not.
            decimals = len(claimed.split(".")[1]) if "." in claimed else 0
            tolerance = max(tolerance, Fraction(1, 2 * 10**decimals) if decimals else tolerance)
            if abs(actual - stated) > tolerance:
                slips.append(ArithmeticSlip(line=lineno, expression=expr, claimed=claimed, actual=format_number(actual)))
    return slips
