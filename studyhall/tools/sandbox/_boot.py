"""The sandbox child's main program (started by _child.py, which hands it the config).

Order matters: confine the process (kernel layers first, while it still
has the privileges to set them up), install the in-interpreter guards, then compile and run
the model's code in a fresh namespace and report on the result channel (fd from the config):

    layers ["process", "netns", ...]     which layers are in force
    result {"value": ..., "error": ...}  how the code ended
    forbidden <what>                     written by the audit hook just before it exits
    setup_error <what>                   confinement failed; no code was run
"""

from __future__ import annotations

import sys


def main(cfg: dict) -> None:
    import _guard  # put in sys.modules by _child.py
    import _kernel
    for name in ("_guard", "_kernel", "_boot"):
        sys.modules.pop(name, None)

    import _ast  # the C modules, not ast/json/linecache: they pull in re and cost ~30 ms
    import _json
    import os

    chan = cfg["channel_fd"]

    def dumps(obj, _str=_json.encode_basestring_ascii) -> str:
        """JSON for the plain data reported here (None, bool, int, str, list, dict)."""
        if obj is None or isinstance(obj, bool):
            return {None: "null", True: "true", False: "false"}[obj]
        if isinstance(obj, int):
            return int.__repr__(obj)
        if isinstance(obj, str):
            return _str(obj)
        if isinstance(obj, list):
            return "[" + ",".join(dumps(x) for x in obj) + "]"
        return "{" + ",".join(_str(k) + ":" + dumps(v) for k, v in obj.items()) + "}"

    def send(tag: str, payload: str) -> None:
        os.write(chan, (tag + " " + payload.replace("\n", " ") + "\n").encode("utf-8", "replace"))

    try:
        layers = confine(cfg, _kernel)
    except Exception as e:  # noqa: BLE001 - reported, and no code runs
        send("setup_error", f"{type(e).__name__}: {e}")
        os._exit(3)
    send("layers", dumps(layers))

    code: str = cfg["code"]
    user_globals: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.path.extend(cfg["site_packages"])
    lines = code.splitlines()
    memory_report = ("result " + dumps({"value": None, "error": {
        "kind": "memory_limit", "message": "MemoryError: the memory limit was reached",
        "exception_type": "MemoryError"}}) + "\n").encode()
    if cfg["audit_hook"]:
        _guard.install_hook(cfg["workdir"], cfg["hook_read_paths"], chan, cfg["max_files"])
    if cfg["import_guard"]:
        _guard.install_import_guard(user_globals, cfg["allowed_packages"])
    del _guard, _kernel, cfg["code"]

    value, error, status = None, None, 0
    try:
        value, error, status = run(code, user_globals, cfg["value_chars"], _ast, lines)
        report = "result " + dumps({"value": value, "error": error}) + "\n"
        os.write(chan, report.encode("utf-8", "replace"))
    except MemoryError:
        os.write(chan, memory_report)
        status = 1
    os._exit(status)  # no interpreter shutdown: atexit handlers and finalisers never run


def confine(cfg: dict, kernel) -> list[str]:
    """Apply the kernel layers the config asks for and the machine supports."""
    import os

    layers = ["process"]
    root = os.geteuid() == 0
    if root and cfg["network_namespace"] and kernel.unshare_network():
        layers.append("netns")
    uid = cfg["uid"] if root else None
    if uid is not None:
        kernel.drop_to_uid(uid, cfg["keep_read_search"])
        layers.append("uid")
    kernel.die_with_parent(cfg["host_pid"])
    kernel.apply_rlimits(cfg, per_run_uid=uid is not None)
    layers.append("rlimits")
    if cfg["landlock"] or cfg["seccomp"]:
        kernel.no_new_privs()
    if cfg["landlock"]:
        abi = kernel.apply_landlock(cfg["read_paths"], cfg["workdir"], ["/dev/null"])
        if abi:
            layers.append(f"landlock-v{abi}")
    if cfg["seccomp"] and kernel.apply_seccomp():
        layers.append("seccomp")
    if cfg["audit_hook"]:
        layers.append("audit-hook")
    if cfg["import_guard"]:
        layers.append("import-guard")
    return layers


def run(code: str, user_globals: dict, value_chars: int, ast, lines: list[str]):
    """Compile and run `code`; evaluate a final expression like a REPL.
    Returns (repr of the value or None, error dict or None, exit status)."""
    try:
        tree = compile(code, "<sandbox>", "exec", ast.PyCF_ONLY_AST)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        body = compile(tree, "<sandbox>", "exec")
        tail = compile(last, "<sandbox>", "eval") if last is not None else None
    except (SyntaxError, ValueError, RecursionError, OverflowError) as e:
        return None, syntax_error(e), 1
    try:
        exec(body, user_globals)
        result = eval(tail, user_globals) if tail is not None else None
        value = None if result is None else repr(result)
        if value is not None and len(value) > value_chars:
            value = value[:value_chars] + f"... [value truncated at {value_chars} characters]"
        return value, None, 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        error = None if status == 0 else {
            "kind": "runtime_error", "message": f"SystemExit: {e.code}",
            "exception_type": "SystemExit"}
        return None, error, status
    except BaseException as e:  # noqa: BLE001 - the model's error, reported as data
        return None, runtime_error(e, lines), 1


MESSAGE_CHARS = 2000  # exception messages and source lines in reports are cut to this


def clip(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + " ... [cut]"


def syntax_error(e: BaseException) -> dict:
    if isinstance(e, SyntaxError):
        where = f" (line {e.lineno}, column {e.offset})" if e.lineno else ""
        text = f": {clip(e.text.strip())}" if e.text and e.text.strip() else ""
        return {"kind": "syntax_error", "message": f"{e.msg}{where}{text}",
                "exception_type": type(e).__name__, "line": e.lineno}
    return {"kind": "syntax_error", "message": clip(f"{type(e).__name__}: {e}"),
            "exception_type": type(e).__name__}


def runtime_error(e: BaseException, lines: list[str]) -> dict:
    kind = "runtime_error"
    if isinstance(e, MemoryError):
        kind = "memory_limit"
        if not str(e):
            e = MemoryError("an allocation failed: the memory limit was reached")
    elif isinstance(e, OSError) and e.errno == 27:  # EFBIG: RLIMIT_FSIZE
        kind = "file_limit"
    name = type(e).__name__
    try:
        message = clip(str(e))
    except BaseException:  # noqa: BLE001
        message = "<the exception's message could not be computed>"
    frames = []  # (line, function) of the code's own frames; library frames are left out
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<sandbox>":
            frames.append((tb.tb_lineno, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    e.__traceback__ = None
    text = "".join(f"  line {n}, in {fn}\n    {clip(lines[n - 1].strip()) if 0 < n <= len(lines) else ''}\n"
                   for n, fn in frames[-8:])
    return {"kind": kind, "message": f"{name}: {message}" if message else name,
            "exception_type": name, "line": frames[-1][0] if frames else None,
            "traceback": text or None}
