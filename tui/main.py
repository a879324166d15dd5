"""`dattui`: the command line. `dattui share`, `dattui clone`, `dattui keys`.

Every error a user can act on is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from dattui import config as config_mod
from dattui.engine.errors import DattuiError

USAGE = """dattui: move research data directly between machines.

  dattui share [DIR]               share a folder; prints its dat:// link
  dattui clone LINK [DIR]          download a share, verified block by block
  dattui keys [DIR]                show a share's link; export/import its secret key
  dattui doctor [--peer [ID]]      why two machines cannot connect, and what to do
  dattui rendezvous --bind H:P     run a rendezvous server (STUN, meeting point, relay)
  dattui                           the dashboard (starts the background daemon if needed)
  dattui list                      what the daemon holds; `dattui stop` ends it
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--port", type=int, default=None, help="UDP port (default 3282, next free if taken)")
    p.add_argument("--no-lan", action="store_true", help="do not look for peers on the local network")
    p.add_argument("--no-dht", action="store_true", help="do not use the BitTorrent Mainline DHT")
    p.add_argument("--dht-bootstrap", metavar="HOST:PORT,...", default=None,
                   help="DHT nodes to join through (default: the public bootstrap nodes)")
    p.add_argument("--rendezvous", action="append", metavar="HOST:PORT",
                   help="a rendezvous server to meet peers through (repeatable)")


def _lanes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lanes", type=int, default=None, choices=range(0, 9), metavar="N",
                   help="worker processes with a connection each, to spread a large transfer over "
                        "N more cores (0-8; default: by the cores, none with fewer than 3)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dattui", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("share", help="share a folder and serve it until Ctrl-C")
    p.add_argument("dir", nargs="?", help="folder to share (default: the current one)")
    p.add_argument("--include-hidden", action="store_true", help="share hidden files too")
    p.add_argument("--background", action="store_true",
                   help="hand the share to the background daemon and return")
    _lanes(p)
    _common(p)

    p = sub.add_parser("clone", help="download a share into a folder")
    p.add_argument("link", help="the dat:// link")
    p.add_argument("dir", nargs="?", help="target folder (default: named after the link)")
    p.add_argument("--peer", action="append", metavar="HOST:PORT",
                   help="connect to this peer directly (repeatable)")
    p.add_argument("--sync", action="store_true",
                   help="keep following new versions and serving after the download")
    p.add_argument("--no-upload", action="store_true",
                   help="only download: serve nothing to other clones")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for a peer before giving up (default 60)")
    p.add_argument("--background", action="store_true",
                   help="hand the clone to the background daemon and return")
    _lanes(p)
    _common(p)

    p = sub.add_parser("rendezvous", help="run a rendezvous server (STUN, meeting point, relay)")
    p.add_argument("--bind", default="0.0.0.0:3478", metavar="HOST:PORT",
                   help="UDP and TCP address to serve on (default 0.0.0.0:3478)")
    p.add_argument("--tcp-port", type=int, default=None,
                   help="TCP port for the relay over TCP (default: the same number, e.g. 443)")
    p.add_argument("--alt-bind", default=None, metavar="[HOST:]PORT|off",
                   help="alternate STUN port, and with HOST a second IP address, so clients can "
                        "test their NAT's filtering (RFC 5780; default: the next port, if free)")

    p = sub.add_parser("doctor", help="why two machines cannot connect, and what to do (--peer: test two)")
    from .doctor_cmd import add_arguments as _doctor_arguments
    _doctor_arguments(p)
    _common(p)

    p = sub.add_parser("list", help="list the daemon's shares and clones")
    p.add_argument("--json", action="store_true")
    sub.add_parser("stop", help="stop the background daemon (transfers stop; they resume next time)")
    p = sub.add_parser("dashboard", help="the full-screen dashboard (same as plain `dattui`)")

    p = sub.add_parser("log", help="the signed versions a shared or cloned folder has had")
    p.add_argument("target", nargs="?", metavar="DIR|LINK",
                   help="the folder (default: this one), or the link of a clone in this folder")
    p.add_argument("--json", action="store_true", help="one JSON object per version")
    p = sub.add_parser("keys", help="show a share's link; export or import its secret key")
    ksub = p.add_subparsers(dest="keys_command")
    show = ksub.add_parser("show", help="print the link of a shared folder")
    show.add_argument("dir", nargs="?", default=".")
    exp = ksub.add_parser("export", help="write a share's secret key to a file (or stdout)")
    exp.add_argument("dir", nargs="?", default=".")
    exp.add_argument("-o", "--output", help="file to write (mode 0600); default stdout")
    imp = ksub.add_parser("import", help="import a secret key exported on another machine")
    imp.add_argument("file", help="the exported key file ('-' for stdin)")
    ksub.add_parser("list", help="list the links of every key on this machine")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args.command = "dashboard"
    # aioquic logs peers' protocol errors as warnings; they are not the user's
    # business on a terminal (peers that misbehave are reported as events)
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    if os.environ.get("DATTUI_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("quic").setLevel(logging.CRITICAL)
    try:
        cfg = config_mod.load()
        if args.command in ("dashboard", "list", "stop") or getattr(args, "background", False):
            from .daemon_cmds import run_daemon_command
            return asyncio.run(run_daemon_command(args, cfg))
        if args.command == "rendezvous":
            from .rendezvous_cmd import run_rendezvous_cmd
            return asyncio.run(run_rendezvous_cmd(args))
        if args.command == "share":
            from .transfer_cmds import run_share
            return asyncio.run(run_share(args, cfg))
        if args.command == "clone":
            from .transfer_cmds import run_clone
            return asyncio.run(run_clone(args, cfg))
        if args.command == "doctor":
            from .doctor_cmd import run_doctor
            return asyncio.run(run_doctor(args, cfg))
        if args.command == "log":
            from .log_cmd import run_log
            return run_log(args)
        if args.command == "keys":
            from .keys_cmd import run_keys
            return run_keys(args)
    except DattuiError as exc:
        print(f"dattui: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
