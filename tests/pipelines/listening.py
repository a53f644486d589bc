"""Listening TCP sockets of a process tree, from /proc (Linux; no psutil).

/proc/net/tcp and /proc/net/tcp6 list every socket of the network namespace with its inode;
/proc/<pid>/fd links name the inodes a process holds ('socket:[12345]').
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os

TCP_LISTEN = '0A'
LOOPBACK = frozenset({'127.0.0.1', '::1', '::ffff:127.0.0.1'})


@dataclasses.dataclass(frozen=True)
class Listener:
    pid: int
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        return self.address in LOOPBACK


def decode_address(hex_address: str) -> tuple[str, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080); IPv6 addresses are four host-order 32-bit words."""
    host, port = hex_address.split(':')
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:
        ip = ipaddress.IPv6Address(b''.join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped is not None:  # written '::ffff:127.0.0.1', not '::ffff:7f00:1'
            return f'::ffff:{ip.ipv4_mapped}', int(port, 16)
    return str(ip), int(port, 16)


def listening_inodes() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket in this network namespace."""
    out = {}
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == TCP_LISTEN:
                out[int(fields[9])] = decode_address(fields[1])
    return out


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/<pid>/stat's parent pids)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(')') + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f'/proc/{pid}/fd')
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if target.startswith('socket:['):
            out.add(int(target[len('socket:['):-1]))
    return out


def listeners(root: int) -> set[Listener]:
    """Listening TCP sockets held by ``root`` or any of its descendants, now."""
    table = listening_inodes()
    found = set()
    for pid in process_tree(root):
        for inode in socket_inodes(pid) & table.keys():
            address, port = table[inode]
            found.add(Listener(pid, address, port))
    return found
