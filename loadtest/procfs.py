"""What the load kit reads from /proc: a process's stat fields, its children, its memory
status lines, and CPU seconds. Standard library only, shared by every script here."""
import os
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: fields[0] is the state (field 3),
    fields[11:13] utime and stime, fields[13:15] the reaped children's, in ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The live children of every thread of `pid`."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass  # the thread ended meanwhile
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        try:
            todo += children(child)
        except OSError:
            pass  # it ended meanwhile
    return found


def cpu_ticks(pid: int, reaped: bool = False) -> int:
    """utime + stime of `pid` (plus its reaped children's with `reaped`); 0 once it is gone."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return 0
    return sum(int(v) for v in fields[11 : 15 if reaped else 13])


def status_kib(pid: int, field: str) -> int:
    """A `kB` line of /proc/<pid>/status, e.g. VmRSS or VmHWM."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")
