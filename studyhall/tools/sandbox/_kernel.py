"""Kernel confinement for the sandbox child: rlimits, network namespace, privilege drop,
Landlock and seccomp. Runs inside the child before any model-written code; stdlib only.

Every function applies one layer and says whether it did; a layer the machine lacks is
skipped (and left out of the reported layer list), never faked. See docs/sandbox.md.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_KEEPCAPS = 8
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
CAP_DAC_READ_SEARCH = 2


def _check(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


# --- resource limits -----------------------------------------------------------------------


def _user_task_count(uid: int) -> int:
    """Tasks (processes and threads) that `uid` owns now: RLIMIT_NPROC counts them all."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                n += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return n


def apply_rlimits(cfg: dict, per_run_uid: bool) -> None:
    """Hard limits equal to soft ones (so the code cannot raise them), except CPU: the soft
    limit sends SIGXCPU, the hard one a second later SIGKILL (for code that ignores SIGXCPU)."""
    mib = 1024 * 1024
    cpu = max(1, int(-(-cfg["cpu_seconds"] // 1)))
    nproc = cfg["max_processes"]
    if os.getuid() == 0:
        nproc = resource.RLIM_INFINITY  # root is exempt from RLIMIT_NPROC anyway
    elif not per_run_uid:
        # RLIMIT_NPROC counts every task of the user, not of this process tree.
        nproc += _user_task_count(os.getuid())
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_AS: (cfg["memory_mib"] * mib,) * 2,
        resource.RLIMIT_FSIZE: (cfg["file_size_kib"] * 1024,) * 2,
        resource.RLIMIT_NOFILE: (cfg["max_open_files"],) * 2,
        resource.RLIMIT_NPROC: (nproc,) * 2,
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_STACK: (cfg["stack_mib"] * mib,) * 2,
    }
    for which, (soft, hard) in limits.items():
        _, cur_hard = resource.getrlimit(which)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))


# --- root only: network namespace and an unprivileged per-run uid --------------------------


def unshare_network() -> bool:
    """A fresh network namespace: only a down loopback, no route anywhere (needs root)."""
    return _libc.unshare(CLONE_NEWNET) == 0


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_to_uid(uid: int, keep_read_search: bool) -> None:
    """Become `uid` (a fresh one per run, so RLIMIT_NPROC counts only this run and no other
    process can be signalled), keeping at most CAP_DAC_READ_SEARCH when the interpreter
    lives under a directory the new uid could not traverse (e.g. /root/.pyenv)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        if not (keep_read_search and cap == CAP_DAC_READ_SEARCH):
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _check(_libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    if keep_read_search:
        data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)


def die_with_parent(host_pid: int) -> None:
    """SIGKILL this process if the host dies (set after any uid change, which clears it)."""
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if os.getppid() != host_pid:  # the host died before the line above
        os._exit(1)


def no_new_privs() -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


# --- Landlock: the filesystem, TCP and signals, by the kernel --------------------------------

_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446  # same numbers on x86_64 and aarch64
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_REMOVE_DIR, _FS_REMOVE_FILE, _FS_MAKE_DIR, _FS_MAKE_REG = 1 << 4, 1 << 5, 1 << 7, 1 << 8
_FS_TRUNCATE = 1 << 14
_FS_ALL_V1 = (1 << 13) - 1
_ABI_FS_EXTRA = {2: 1 << 13, 3: 1 << 14, 5: 1 << 15}  # REFER, TRUNCATE, IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1


def landlock_abi() -> int:
    if os.uname().machine not in ("x86_64", "aarch64"):
        return 0
    abi = _libc.syscall(_LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(abi, 0)


def apply_landlock(read_paths: list[str], write_dir: str, rw_files: list[str]) -> int:
    """Allow reading beneath `read_paths`, reading and writing beneath `write_dir`, and
    nothing else on the filesystem; with ABI >= 4 no TCP bind/connect; with ABI >= 6 no
    signals to processes outside the sandbox. Returns the ABI used, 0 if unavailable."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    handled_fs = _FS_ALL_V1
    for v, bit in _ABI_FS_EXTRA.items():
        if abi >= v:
            handled_fs |= bit
    fields = [handled_fs]
    if abi >= 4:
        fields.append(_NET_BIND_TCP | _NET_CONNECT_TCP)
    if abi >= 6:
        fields.append(_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL)
    attr = ctypes.create_string_buffer(struct.pack(f"<{len(fields)}Q", *fields))
    ruleset = _libc.syscall(_LL_CREATE, attr, ctypes.c_size_t(len(attr.raw)), ctypes.c_uint32(0))
    _check(ruleset, "landlock_create_ruleset")
    try:
        file_bits = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | (_FS_TRUNCATE if abi >= 3 else 0)
        read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
        write = (read | _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE_DIR
                 | _FS_MAKE_REG | (_FS_TRUNCATE if abi >= 3 else 0))
        rules = [(p, read) for p in read_paths] + [(write_dir, write)]
        rules += [(p, _FS_READ_FILE | _FS_WRITE_FILE) for p in rw_files]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this machine does not have
            try:
                if not os.path.isdir(path):
                    access &= file_bits
                rule = ctypes.create_string_buffer(struct.pack("<Qi", access, fd))
                _check(_libc.syscall(_LL_ADD_RULE, ruleset, 1, rule, 0), f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        _check(_libc.syscall(_LL_RESTRICT, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


# --- seccomp: system calls that no math needs, killed on sight -------------------------------

_RET_KILL_PROCESS, _RET_ALLOW, _RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06

# name -> number per architecture (x86_64: arch/x86/entry/syscalls/syscall_64.tbl;
# aarch64: include/uapi/asm-generic/unistd.h). None: the call does not exist there.
_SYSCALLS: dict[str, tuple[int | None, int | None]] = {
    # network
    "socket": (41, 198), "socketpair": (53, 199), "connect": (42, 203), "bind": (49, 200),
    "listen": (50, 201), "accept": (43, 202), "accept4": (288, 242),
    # new processes and programs (clone itself is checked below: threads stay allowed)
    "fork": (57, None), "vfork": (58, None), "execve": (59, 221), "execveat": (322, 281),
    # other processes
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "tkill": (200, 130), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    # namespaces, mounts and the kernel itself
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428),
    "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "reboot": (169, 142),
    "swapon": (167, 224), "swapoff": (168, 225), "acct": (163, 89),
    "settimeofday": (164, 170), "clock_settime": (227, 112), "adjtimex": (159, 171),
    "clock_adjtime": (305, 266), "quotactl": (179, 60),
    "name_to_handle_at": (303, 264), "open_by_handle_at": (304, 265),
    "mknod": (133, None), "mknodat": (259, 33),
}
_CHECKED = {"clone": (56, 220), "kill": (62, 129), "tgkill": (234, 131)}
_ENOSYS = {"clone3": (435, 435)}  # flags live in memory BPF cannot read: glibc falls back to clone
_ARCH = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}


def _seccomp_program(arch_index: int, audit_arch: int, pid: int) -> list[tuple[int, int, int, int]]:
    prog: list[tuple[int, int, int, int]] = []

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> None:
        prog.append((code, jt, jf, k))

    op(_LD_W_ABS, 4)                        # seccomp_data.arch
    op(_JEQ, audit_arch, 1, 0)
    op(_RET, _RET_KILL_PROCESS)
    op(_LD_W_ABS, 0)                        # seccomp_data.nr
    if arch_index == 0:                     # x32 ABI numbers on x86_64
        op(_JGE, 0x40000000, 0, 1)
        op(_RET, _RET_KILL_PROCESS)
    for numbers in _SYSCALLS.values():
        nr = numbers[arch_index]
        if nr is not None:
            op(_JEQ, nr, 0, 1)
            op(_RET, _RET_KILL_PROCESS)
    for numbers in _ENOSYS.values():
        op(_JEQ, numbers[arch_index], 0, 1)
        op(_RET, _RET_ERRNO | errno.ENOSYS)
    # clone: only with CLONE_THREAD (a thread, not a process)
    op(_JEQ, _CHECKED["clone"][arch_index], 0, 4)
    op(_LD_W_ABS, 16)                       # args[0] low word: flags
    op(_JSET, CLONE_THREAD, 1, 0)
    op(_RET, _RET_KILL_PROCESS)
    op(_RET, _RET_ALLOW)
    # kill / tgkill: only this process itself
    for name in ("kill", "tgkill"):
        op(_JEQ, _CHECKED[name][arch_index], 0, 4)
        op(_LD_W_ABS, 16)                   # args[0] low word: pid / tgid
        op(_JEQ, pid & 0xFFFFFFFF, 1, 0)
        op(_RET, _RET_KILL_PROCESS)
        op(_RET, _RET_ALLOW)
    op(_RET, _RET_ALLOW)
    return prog


def apply_seccomp() -> bool:
    """Install the filter (after no_new_privs). Returns False on an unknown architecture."""
    arch = _ARCH.get(os.uname().machine)
    if arch is None:
        return False
    prog = _seccomp_program(arch[0], arch[1], os.getpid())
    raw = b"".join(struct.pack("<HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
           "prctl(PR_SET_SECCOMP)")
    return True
