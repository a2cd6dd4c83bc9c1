"""``daefr weights list|download``: the weights known by name, where they are cached, fetching them ahead."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "weights"
HELP = "list the weights known by name (cached or not) or download them ahead of time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr weights`` options to ``parser``."""
    # one positional action (not sub-parsers): the CLI parses options intermixed with positionals
    parser.add_argument("action", choices=("list", "download"),
                        help="list: name, source, size, licence note and cache state of each known file; "
                             "download: fetch NAMEs into the local caches (for machines without network)")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="download: a known name (see `daefr weights list`), 'all', "
                             "hf://OWNER/REPO/FILE[@REVISION] or a URL")
    parser.add_argument("--json", action="store_true", help="list: print a JSON list instead of a table")
    parser.add_argument("--remote", action="store_true",
                        help="list: also ask the Hub for the size of files not cached (one request each, with timeout)")
    parser.add_argument("--force", action="store_true",
                        help="download: fetch again even if cached (replaces a corrupted copy)")


def _size(path: Path | None) -> str:
    return "-" if path is None else _bytes(path.stat().st_size)


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"  # pragma: no cover


def _rows(remote: bool) -> list[dict[str, Any]]:
    from daefr.utils import hub

    rows = []
    for known in hub.KNOWN_WEIGHTS.values():
        cached = hub.cached_path(known)
        size = _size(cached)
        if cached is None and remote and known.hf_repo and known.hf_file:
            size = _bytes(hub.remote_size(hub.HubFile(known.hf_repo, known.hf_file)))
        rows.append({"name": known.name, "what": known.what, "source": known.source,
                     "sha256": known.sha256 or (f"{known.sha256_prefix}..." if known.sha256_prefix else None),
                     "size": size, "cached": str(cached) if cached else None, "licence": known.licence})
    return rows


def _list(as_json: bool, remote: bool) -> int:
    from daefr.utils import hub

    rows = _rows(remote)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = (f"cached  {r['size']:>9}  {r['cached']}" if r["cached"]
                 else "not cached" + (f" ({r['size']} on the Hub)" if r["size"] != "-" else ""))
        print(f"{r['name']:<{width}}  {r['what']}")
        print(f"{'':<{width}}  source:  {r['source']}" + (f"  (sha256 {r['sha256']})" if r["sha256"] else ""))
        print(f"{'':<{width}}  licence: {r['licence']}")
        print(f"{'':<{width}}  {state}")
    print(f"\nHub cache: {hub.hub_cache_dir()} (HF_HOME / HF_HUB_CACHE); URL cache: {hub.url_cache_dir()} "
          f"(TORCH_HOME){'; downloads off (HF_HUB_OFFLINE)' if hub.offline() else ''}")
    return 0


def _download(names: list[str], force: bool) -> int:
    from daefr.errors import DaefrError
    from daefr.utils import hub

    wanted = list(hub.KNOWN_WEIGHTS) if names == ["all"] else names
    failed = 0
    for spec in wanted:
        try:
            path = hub.fetch(spec, force=force)
        except DaefrError as exc:
            print(f"{spec}: FAILED: {exc}")
            failed += 1
            continue
        print(f"{spec}: {path} ({_size(path)})")
    if failed:
        print(f"{failed} of {len(wanted)} failed")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    """Run ``daefr weights`` (list or download known weights) with the parsed ``args``; returns the exit code."""
    from daefr.errors import ConfigError

    if args.action == "list":
        if args.names:
            raise ConfigError(f"`daefr weights list` takes no names (got {' '.join(args.names)})")
        return _list(args.json, args.remote)
    if not args.names:
        raise ConfigError("`daefr weights download` needs at least one NAME (or 'all'); see `daefr weights list`")
    return _download(args.names, args.force)
