"""`dattui`: the command line. `dattui share`, `dattui clone`, `dattui keys`.

Every error a user can act on is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import os
import sys

from dattui import config as config_mod
from dattui.engine.errors import DattuiError, UsageError

USAGE = """dattui: move research data directly between machines.

  dattui share [DIR]               share a folder; prints its dat:// link
  dattui clone LINK [DIR]          download a share, verified block by block
  dattui pull [DIR]                update a clone to the share's newest version, then exit
  dattui sync [DIR]                keep a clone following (or a share serving) until Ctrl-C
  dattui status [DIR]              what a folder is: link, version, how complete
  dattui ls LINK                   a link's files and sizes, without downloading them
  dattui verify [DIR]              re-hash a clone or share against its signed version
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


def _limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit-up", metavar="RATE", default=None,
                   help="upload limit, e.g. 20MB (per second), 2MiB, 100mbit, off "
                        "(default: [bandwidth] in config.toml, none)")
    p.add_argument("--limit-down", metavar="RATE", default=None,
                   help="download limit, e.g. 50MB, off (default: [bandwidth] in config.toml, none)")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include", action="append", metavar="GLOB",
                   help="fetch only files matching this gitignore-style pattern, e.g. '*.csv' "
                        "(repeatable; remembered for pull)")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="do not fetch files matching this pattern (repeatable; remembered)")


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
    _limits(p)
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
    _selection(p)
    p.add_argument("--verify", action="store_true",
                   help="first re-hash what is already in DIR (as `dattui verify`): what is "
                        "damaged is fetched again")
    _lanes(p)
    _limits(p)
    _common(p)

    for name, text in (("pull", "update a clone to the newest version once, then exit"),
                       ("sync", "keep a clone following new versions (or a share serving)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("dir", nargs="?", help="the clone's (or share's) folder (default: the current one)")
        p.add_argument("--peer", action="append", metavar="HOST:PORT",
                       help="connect to this peer directly (repeatable)")
        p.add_argument("--no-upload", action="store_true",
                       help="only download: serve nothing to other clones")
        p.add_argument("--timeout", type=float, default=None,
                       help="seconds to wait for a peer before giving up (default 60)")
        p.add_argument("--include-hidden", action="store_true", help="(a share) share hidden files too")
        _selection(p)
        _lanes(p)
        _limits(p)
        _common(p)

    p = sub.add_parser("ls", help="list a link's files and sizes (from its signed manifest; no data)")
    p.add_argument("link", help="the dat:// link")
    p.add_argument("--peer", action="append", metavar="HOST:PORT",
                   help="ask this peer directly (repeatable)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for a peer before giving up (default 60)")
    _common(p)

    p = sub.add_parser("status", help="what a folder is: a share or clone, its link, version, completeness")
    p.add_argument("dir", nargs="?", help="the folder (default: the current one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("verify", help="re-hash a clone or share against its signed version")
    from .verify_cmd import add_arguments as _verify_arguments
    _verify_arguments(p)

    p = sub.add_parser("rendezvous", help="run a rendezvous server (STUN, meeting point, relay)")
    p.add_argument("--bind", default="0.0.0.0:3478", metavar="HOST:PORT",
                   help="UDP and TCP address to serve on (default 0.0.0.0:3478)")
    p.add_argument("--tcp-port", type=int, default=None,
                   help="TCP port for the relay over TCP (default: the same number, e.g. 443)")
    p.add_argument("--alt-bind", default=None, metavar="[HOST:]PORT|off",
                   help="alternate STUN port, and with HOST a second IP address, so clients can "
                        "test their NAT's filtering (RFC 5780; default: the next port, if free)")
    p.add_argument("--relay-rate", default=None, metavar="RATE",
                   help="relay bandwidth of the whole server, bytes/s (e.g. 100M, 1G, 50MiB; 0: no limit; "
                        "default rendezvous.relay_rate, 0), shared fairly among relayed connections")
    p.add_argument("--relay-rate-per-allocation", default=None, metavar="RATE",
                   help="most bytes/s one relayed connection may use (0: no limit, the default)")
    p.add_argument("--relay-max-duration", type=float, default=None, metavar="SECONDS",
                   help="most seconds one relay allocation lasts; nodes then allocate a new one "
                        "(0: no limit, the default)")
    p.add_argument("--relay-idle", type=float, default=None, metavar="SECONDS",
                   help="an allocation with no relayed data for this long ends (default 60)")

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
    p = sub.add_parser("keys", help="show a share's link (`dattui keys DIR`); export or import its secret key")
    ksub = p.add_subparsers(dest="keys_command")
    show = ksub.add_parser("show", help="print the link of a shared folder")
    show.add_argument("dir", nargs="?", default=".")
    exp = ksub.add_parser("export", help="write a share's secret key to a file (or stdout)")
    exp.add_argument("dir", nargs="?", default=".")
    exp.add_argument("-o", "--output", help="file to write (mode 0600); default stdout")
    imp = ksub.add_parser("import", help="import a secret key exported on another machine")
    imp.add_argument("file", help="the exported key file ('-' for stdin)")
    ksub.add_parser("list", help="list every key on this machine: its link and the folders it shares")
    return parser


KEYS_COMMANDS = ("show", "export", "import", "list")


def _normalise(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`dattui keys DIR` means `dattui keys show DIR`; an unknown command is a
    one-line error naming the closest real one."""
    if not argv or argv[0].startswith("-"):
        return argv
    commands = next(a.choices for a in parser._actions  # noqa: SLF001 - argparse keeps them there
                    if isinstance(a, argparse._SubParsersAction))
    if argv[0] not in commands:
        close = difflib.get_close_matches(argv[0], list(commands), n=1, cutoff=0.5)
        hint = f"did you mean `dattui {close[0]}`?" if close else "`dattui --help` lists the commands"
        raise UsageError(f"unknown command {argv[0]!r}: {hint}")
    if argv[0] == "keys" and len(argv) > 1 and argv[1] not in KEYS_COMMANDS \
            and not argv[1].startswith("-"):
        return ["keys", "show", *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        argv = _normalise(parser, list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        print(f"dattui: {exc}", file=sys.stderr)
        return exc.exit_code
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
            return asyncio.run(run_rendezvous_cmd(args, cfg))
        if args.command == "share":
            from .transfer_cmds import run_share
            return asyncio.run(run_share(args, cfg))
        if args.command == "clone":
            from .transfer_cmds import run_clone
            return asyncio.run(run_clone(args, cfg))
        if args.command == "doctor":
            from .doctor_cmd import run_doctor
            return asyncio.run(run_doctor(args, cfg))
        if args.command == "ls":
            from .ls_cmd import run_ls
            return asyncio.run(run_ls(args, cfg))
        if args.command in ("pull", "sync", "status"):
            from . import folder_cmds
            return asyncio.run(getattr(folder_cmds, "run_" + args.command)(args, cfg))
        if args.command == "verify":
            from .verify_cmd import run_verify
            return run_verify(args)
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
