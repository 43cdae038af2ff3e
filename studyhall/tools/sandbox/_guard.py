"""The in-interpreter layer of the sandbox child: an audit hook on operations and an import
guard for the model's code. Runs inside the child; stdlib only.

The audit hook (PEP 578) sees operations, not imports: numpy and sympy may import ``os``, but
an ``os.system``, ``socket.connect``, ``subprocess.Popen``, ctypes call or ``open`` outside the
allowed paths is refused wherever it comes from. A refusal reports what was blocked on the
result channel and ends the process at once (``os._exit``), so the code cannot catch it.

The hook never calls back into Python code the sandboxed program could have replaced: every
function and policy value it uses is bound as a default argument when it is installed (a
frozen tuple/frozenset, or a C function), and it only inspects ``str``/``bytes``/``int``
arguments. It is still a Python-level barrier: interpreter bugs or memory corruption can get
past it. The kernel layers (_kernel.py) are the ones that hold then.
"""

from __future__ import annotations

import builtins
import os
import sys

EXIT_FORBIDDEN = 117
FORBIDDEN_EVENT = "studyhall.sandbox.forbidden"

# Events refused outright, whatever their arguments.
DENY_EVENTS = frozenset({
    "os.system", "os.kill", "os.killpg", "os.startfile", "os.fork", "os.forkpty",
    "os.chdir", "os.chroot", "os.chmod", "os.chown", "os.chflags", "os.lchflags", "os.lchmod",
    "os.link", "os.symlink", "os.getxattr", "os.listxattr", "os.removexattr", "os.setxattr",
    "os.add_dll_directory",
    "subprocess.Popen", "pty.spawn",
    "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions",
    "sys.addaudithook", "sys.remote_exec",
    "code.__new__",
    "resource.setrlimit", "resource.prlimit",
    "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata",
    "ctypes.string_at", "ctypes.wstring_at", "ctypes.PyObj_FromPtr", "ctypes.set_exception",
    "ctypes.seh_exception",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "gc.freeze",
    "mmap.__new__", "signal.pthread_kill",
})
# Event families refused outright (network clients, processes, native code, databases).
DENY_PREFIXES = (
    "socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "sqlite3.",
    "urllib.", "http.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.", "telnetlib.",
    "webbrowser.", "fcntl.", "syslog.", "_winapi.", "winreg.", "msvcrt.", "ensurepip.",
)
# Events with path arguments: event -> (indices of paths, indices of dir_fd arguments).
# Writes must stay inside the work directory; a dir_fd other than the default is refused.
WRITE_PATH_EVENTS = {
    "os.mkdir": ((0,), (2,)), "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)),
    "os.rename": ((0, 1), (2, 3)), "os.truncate": ((0,), ()), "os.utime": ((0,), (3,)),
}
READ_PATH_EVENTS = {"os.listdir": ((0,), ()), "os.scandir": ((0,), ()), "os.walk": ((0,), ()),
                    "os.fwalk": ((0,), (4,))}
# Frequent events with nothing to check: answered first, so imports stay fast.
FAST_ALLOW = frozenset({"exec", "compile", "import", "marshal.loads", "marshal.dumps",
                        "builtins.id", "object.__getattr__", "sys._getframe", "function.__new__",
                        "os.putenv", "os.unsetenv", "array.__new__", "builtins.input",
                        "builtins.input/result", "cpython._PySys_ClearAuditHooks",
                        "object.__delattr__", "ctypes.addressof", "ctypes.cdata/buffer",
                        "ctypes.create_string_buffer", "ctypes.create_unicode_buffer",
                        "ctypes.get_errno", "ctypes.set_errno", "time.sleep"})

# Modules the model's own code may not import: processes, network, native code and the
# interpreter's internals (a convenience layer that names the problem early; the hook above
# is what stops the operations). File helpers (pathlib, tempfile, shutil, glob) stay
# importable: the hook confines what they touch to the work directory.
BLOCKED_IMPORTS = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl",
    "_ssl", "select", "selectors", "asyncio", "ctypes", "_ctypes", "multiprocessing",
    "_multiprocessing", "concurrent", "threading", "_thread", "signal", "_signal", "importlib",
    "imp", "pkgutil", "runpy", "zipimport", "builtins", "gc", "inspect", "code", "codeop",
    "pty", "tty", "termios", "fcntl", "mmap", "resource", "_io", "urllib", "http", "ftplib", "smtplib", "poplib", "imaplib", "nntplib",
    "telnetlib", "xmlrpc", "webbrowser", "sqlite3", "_sqlite3", "pickle", "_pickle", "marshal",
    "shelve", "dbm", "faulthandler", "tracemalloc", "sysconfig", "site", "platform", "pwd",
    "grp", "spwd", "crypt", "posixpath", "genericpath", "ntpath", "_winapi", "msvcrt",
    "winreg", "atexit", "ensurepip", "venv", "zipapp", "_imp", "_frozen_importlib",
    "_frozen_importlib_external", "_weakref", "weakref", "_tracemalloc", "_testcapi",
})

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def install_hook(work_dir: str, read_roots: list[str], channel_fd: int, max_files: int) -> None:
    """Install the audit hook (it cannot be removed again)."""
    work = work_dir.rstrip("/")
    roots = tuple(r.rstrip("/") or "/" for r in read_roots)
    type_name = type.__dict__["__name__"].__get__  # a class cannot fake this one

    def deny(what, _fd=channel_fd, _write=os.write, _exit=os._exit, _code=EXIT_FORBIDDEN,
             _replace=str.replace, _encode=str.encode):
        try:
            line = _replace(_replace(what, "\n", " "), "\r", " ")
            _write(_fd, b"forbidden " + _encode(line, "utf-8", "replace") + b"\n")
        finally:
            _exit(_code)

    def as_path(p, _work=work, _type=type, _str=str, _bytes=bytes, _issub=issubclass,
                _sstr=str.__str__, _decode=bytes.decode, _startswith=str.startswith,
                _split=str.split, _join=str.join):
        """The absolute, lexically normalised path; None for what is not a path string."""
        t = _type(p)
        if t is _str or _issub(t, _str):
            p = _sstr(p)
        elif t is _bytes or _issub(t, _bytes):
            p = _decode(p, "utf-8", "surrogateescape")
        else:
            return None
        if not _startswith(p, "/"):
            p = _work + "/" + p  # chdir is refused, so the cwd stays the work directory
        parts = []
        for seg in _split(p, "/"):
            if seg == "" or seg == ".":
                continue
            if seg == "..":
                if parts:
                    parts.pop()
            else:
                parts.append(seg)
        return "/" + _join("/", parts)

    def under(path, root, _startswith=str.startswith):
        return root == "/" or path == root or _startswith(path, root + "/")

    def not_a_path(p, what, _type=type, _int=int, _issub=issubclass, _deny=deny,
                   _name=type_name):
        t = _type(p)
        if not (p is None or t is _int or _issub(t, _int)):  # None: the cwd; int: a held fd
            _deny(what + " with an argument of type " + _name(t))

    def check_read(p, what, _work=work, _roots=roots, _as_path=as_path, _under=under,
                   _not_a_path=not_a_path, _deny=deny,
                   _exact=frozenset({"/dev/null", "/dev/urandom", "/dev/zero"})):
        path = _as_path(p)
        if path is None:
            return _not_a_path(p, what)
        if _under(path, _work) or path in _exact:
            return
        for root in _roots:
            if _under(path, root):
                return
        _deny(what + " " + path + " (only the work directory and the Python installation "
              "can be read)")

    def check_write(p, what, creating, _work=work, _as_path=as_path, _under=under,
                    _not_a_path=not_a_path, _deny=deny, _lstat=os.lstat, _created=[0],  # noqa: B006 (the one counter)
                    _max=max_files, _too_many=f" (more than {max_files} files created)",
                    _exact=frozenset({"/dev/null"})):
        path = _as_path(p)
        if path is None:
            return _not_a_path(p, what)
        if path in _exact:
            return
        if not _under(path, _work):
            _deny(what + " " + path + " (writes are allowed only inside the sandbox's "
                  "temporary directory)")
        if creating:
            try:
                _lstat(path)
            except OSError:
                _created[0] += 1
                if _created[0] > _max:
                    _deny(what + " " + path + _too_many)

    ours = (deny, as_path, under, not_a_path, check_read, check_write)

    def hook(event, args, _type=type, _str=str, _sstr=str.__str__, _int=int, _len=len,
             _startswith=str.startswith, _fast=FAST_ALLOW, _deny_events=DENY_EVENTS,
             _deny_prefixes=DENY_PREFIXES, _writes=WRITE_PATH_EVENTS, _reads=READ_PATH_EVENTS,
             _write_flags=_WRITE_FLAGS, _creat=os.O_CREAT,
             _forbidden=FORBIDDEN_EVENT, _ours=ours, _deny=deny, _issub=issubclass,
             _check_read=check_read, _check_write=check_write):
        try:
            if _type(event) is not _str:
                event = _sstr(event)
            if event in _fast:
                return
            if event in _deny_events:
                _deny(event)
            for prefix in _deny_prefixes:
                if _startswith(event, prefix):
                    _deny(event)
            if event == "open":
                path, mode, flags = args
                if mode is None and _type(path) is not _int:  # os.open: its dir_fd is unseen
                    _check_write(path, "os.open", True)
                elif _type(flags) is _int and flags & _write_flags:
                    _check_write(path, "open for writing", (flags & _creat) != 0)
                else:
                    _check_read(path, "open")
            elif event in _writes or event in _reads:
                paths, dir_fds = _writes[event] if event in _writes else _reads[event]
                for i in dir_fds:
                    if i < _len(args) and not (args[i] is None or args[i] == -1):
                        _deny(event + " with dir_fd")
                for i in paths:
                    if event in _writes:
                        _check_write(args[i], event, event == "os.mkdir")
                    else:
                        _check_read(args[i], event)
            elif event == "ctypes.dlopen":
                if args[0] is not None:
                    _deny("ctypes.dlopen of a library")
            elif event == "object.__setattr__":
                for f in _ours:  # the hook's helpers: their defaults are its policy
                    if args[0] is f:
                        _deny("changing the sandbox's own functions")
            elif event == _forbidden:
                what = args[0] if _len(args) else None
                _deny(_sstr(what) if _issub(_type(what), _str) else "a forbidden operation")
        except BaseException:  # never let an exception (and with it this frame) escape
            _deny("an operation the sandbox could not check: " + event)

    sys.addaudithook(hook)


def install_import_guard(user_globals: dict, allowed_packages: list[str]) -> None:
    """Refuse imports of BLOCKED_IMPORTS made directly by the model's code, and any
    third-party package outside `allowed_packages` for everyone."""
    allowed = frozenset(allowed_packages) | frozenset(sys.stdlib_module_names)

    class AllowedPackagesOnly:
        """First on sys.meta_path: anything not stdlib or allowed is not found."""

        @staticmethod
        def find_spec(fullname, path=None, target=None, _allowed=allowed):
            top = fullname.partition(".")[0]
            if top in _allowed:
                return None
            raise ModuleNotFoundError(
                f"No module named {fullname!r} in the sandbox (it allows the standard library "
                f"and {', '.join(sorted(allowed_packages))})", name=fullname)

    sys.meta_path.insert(0, AllowedPackagesOnly)

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0, *,
                       _orig=builtins.__import__, _user=user_globals, _blocked=BLOCKED_IMPORTS,
                       _getframe=sys._getframe, _audit=sys.audit, _str=str,
                       _forbidden=FORBIDDEN_EVENT):
        if level == 0 and type(name) is _str and _getframe(1).f_globals is _user:
            top = name.partition(".")[0]
            if top in _blocked:
                _audit(_forbidden, f"import {name} (module {top!r} is not available to sandboxed code)")
        return _orig(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
