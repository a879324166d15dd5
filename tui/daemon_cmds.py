"""Commands that go through the background daemon: the dashboard, `list`,
`stop`, and `share`/`clone --background`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dattui.engine.daemon.client import DaemonClient, daemon_running, ensure_daemon
from dattui.engine.errors import DattuiError, UsageError
from dattui.engine.keys import parse_link
from dattui.engine.statedir import state_dir

from .progress import format_rate


def _daemon_args(args) -> list[str]:
    out = []
    if getattr(args, "port", None) is not None:
        out += ["--port", str(args.port)]
    if getattr(args, "no_lan", False):
        out.append("--no-lan")
    if getattr(args, "no_dht", False):
        out.append("--no-dht")
    return out


async def run_daemon_command(args, cfg) -> int:
    state = state_dir()
    if args.command == "stop":
        if not daemon_running(state):
            print("dattui: no daemon is running", file=sys.stderr)
            return 0
        client = await DaemonClient.connect(state)
        await client.stop_daemon()
        await client.close()
        print("daemon stopped; its transfers resume when it starts again", file=sys.stderr)
        return 0
    if args.command == "list" and not daemon_running(state):
        print("no daemon is running: `dattui` or `dattui share DIR --background` starts one",
              file=sys.stderr)
        return 0
    if getattr(args, "lanes", None) is not None:
        raise UsageError("--lanes applies to a share or clone run in the foreground; for the "
                         "background daemon set transfer.lanes in config.toml")
    client = await ensure_daemon(state, _daemon_args(args))
    try:
        if getattr(args, "limit_up", None) is not None or getattr(args, "limit_down", None) is not None:
            from dattui.engine import bandwidth
            up, down = await client.limits(args.limit_up, args.limit_down)
            print(f"bandwidth of every transfer in the daemon: up {bandwidth.format_rate(up)}, "
                  f"down {bandwidth.format_rate(down)}", file=sys.stderr)
        if args.command == "dashboard":
            from .app import QUIT_MESSAGE, DattuiApp
            app = DattuiApp(client, cfg)
            await app.run_async()
            print(QUIT_MESSAGE, file=sys.stderr)  # once, after the alternate screen is gone
            return 0
        if args.command == "list":
            rows = await client.status()
            if args.json:
                from dattui.engine import codec
                for st in rows:
                    print(json.dumps(codec.encode(st)))
                return 0
            for st in rows:
                pct = 100.0 * st.bytes_have / st.bytes_total if st.bytes_total else 0.0
                print(f"{st.role.value:5} {st.state.value:12} {pct:5.1f}%  {len(st.peers):2} peers  "
                      f"↓{format_rate(st.rate_down):>10} ↑{format_rate(st.rate_up):>10}  "
                      f"{st.path}  {st.link[:18]}…")
            if not rows:
                print("the daemon holds no shares or clones", file=sys.stderr)
            return 0
        if args.command == "share":
            result = await client.call("share", path=str(Path(args.dir or ".").resolve()))
            print(result["link"])
            return 0
        if args.command == "clone":
            parse_link(args.link)
            folder = Path(args.dir) if args.dir else Path(parse_link(args.link).hex())
            await client.clone(args.link, str(folder.absolute()), peers=args.peer or [],
                               include=args.include, exclude=args.exclude)
            print(f"cloning into {folder.absolute()} in the background; `dattui list` shows progress",
                  file=sys.stderr)
            return 0
    finally:
        await client.close()
    raise DattuiError(f"unknown command {args.command}")
