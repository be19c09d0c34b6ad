"""Reading /proc/net/tcp: which sockets are on a port, in which state."""

from __future__ import annotations

import pytest

from infra.local.process import TCP_ESTABLISHED, TCP_LISTEN, socket_inodes

pytestmark = pytest.mark.unit

# Port 8000 is 1F40 in hex; 8001 is 1F41. Columns after the inode are left out.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:1F40 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:1F40 0100007F:A1B3 01 00000000:00000000 00:00000000 00000000     0        0 333 1
   3: 0100007F:A1B2 0100007F:1F40 01 00000000:00000000 00:00000000 00000000     0        0 444 1
   4: 0100007F:1F41 0100007F:A1B4 01 00000000:00000000 00:00000000 00000000     0        0 555 1
   5: 0100007F:1F40 0100007F:A1B5 06 00000000:00000000 00:00000000 00000000     0        0 0 1
"""


def test_established_sockets_on_the_local_port_only() -> None:
    # 444 is the client's end of a connection to 8000; 555 is on another port; the last one
    # is in TIME_WAIT.
    assert socket_inodes(PROC_NET_TCP, 8000, TCP_ESTABLISHED) == {222, 333}


def test_the_listening_socket() -> None:
    assert socket_inodes(PROC_NET_TCP, 8000, TCP_LISTEN) == {111}
    assert socket_inodes(PROC_NET_TCP, 8001, TCP_LISTEN) == set()
