#!/usr/bin/env python3
"""Would another regular-expression engine make the parser's scan faster? Measure it.

The parser finds the lines it reads with one regular expression run over each chunk of log text
(``tlslogd.parse._MESSAGE``, with ``finditer``); that scan is about a third of the parser's time.
This script times the same scan, over the same text in the same run, with every engine that is
installed:

- ``re`` (the standard library; what tlslogd uses),
- ``regex`` (``pip install regex``): the same pattern,
- ``google-re2`` (``pip install google-re2``): RE2 has no look-behind, no possessive quantifier
  and no verbose mode, so its pattern drops tlsproxy's look-behinds (it matches more lines),
- ``hyperscan`` (``pip install hyperscan``): finds where the alternatives' literal beginnings
  occur, without groups; ``re`` then matches the groups at each hit (on bytes, as Hyperscan
  scans bytes).

Figures are CPU seconds and ratios against a plain Python read loop and against ``re``, both
measured in the same run (medians of ``--runs``). Engines that are not installed are listed as
such. Usage: ``python3 benchmarks/engines.py [--corpus FILE | --lines N]``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tlslogd import parse  # noqa: E402  (the checkout's parser, not an installed one)

CHUNK = 1 << 20  # the parser's chunks: whole lines, about a MiB each
PREFIX = r"\]:\ (?:\[ID\ \d+\ [a-z0-9]+\.[a-z]+\]\ )?(?:"
# where the alternatives of parse._ALTERNATIVES begin (Hyperscan's prefilter)
LITERAL_STARTS = [
    rb"\]: [0-9A-Za-z]{5,20}: ",
    rb"\]: ([A-Z][a-z]+ )?TLS connection ",
    rb"\]: (dis)?connect from ",
    rb"\]: proxy-(accept|reject): ",
    rb"\]: daemon started ",
    rb"\]: Host offered ",
    rb"\]: SSL_(accept|connect) error ",
    rb"\]: (lost connection|timeout|too many errors) after STARTTLS",
    rb"\]: (warning: )?TLS (library problem|handshake failed)",
    rb"\]: (CONNECT|DISCONNECT) ",
    rb"\]: ((server|client|CA) )?certificate verification failed",
    rb"\]: message repeated ",
    rb"\]: (warning: )?(cannot (get|load)|No server certs|Invalid TLS protocol|error loading)",
    rb"\]: (warning: )?(SMTPS wrappermode|disabling TLS support)",
    rb"\]: warning: (Refusing STARTTLS|New TLS session|Wrapper-mode|TLS policy|(smtp|lmtp)_tls)",
]


def chunks(path: Path) -> list[str]:
    """The log as the parser gets it: decoded chunks of whole lines."""
    out, rest = [], b""
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            out.append(block[:cut].decode("utf-8", "replace"))
    if rest:
        out.append(rest.decode("utf-8", "replace"))
    return out


def read_loop(path: Path) -> Callable[[], int]:
    def run() -> int:
        n = 0
        with path.open(encoding="utf-8", errors="replace") as f:
            for _ in f:
                n += 1
        return n

    return run


def finditer(pattern: Any, texts: list[str]) -> Callable[[], int]:
    scan = pattern.finditer

    def run() -> int:
        return sum(1 for text in texts for _ in scan(text))

    return run


def parser_scan(texts: list[str]) -> Callable[[], int]:
    def run() -> int:
        parser = parse.Parser()
        return sum(1 for text in texts for _ in parser.scan(text))

    return run


def re2_pattern() -> str:
    """``_MESSAGE`` in RE2's dialect: no look-behind, no possessive repeat, no verbose mode."""
    alternatives = parse._ALTERNATIVES.replace(parse._TLSPROXY, "")
    alternatives = alternatives.replace(parse._QID + "+", parse._QID)
    flat = re.sub(r"(?<!\\)\s+", "", PREFIX + alternatives + ")")
    return flat.replace("\\ ", " ")


def candidates(texts: list[str]) -> list[tuple[str, Callable[[], int] | str]]:
    """(name, measurement or why it is missing) for every engine."""
    out: list[tuple[str, Callable[[], int] | str]] = [
        ("re: tlslogd's scan (_MESSAGE.finditer)", finditer(parse._MESSAGE, texts))
    ]
    if (regex := optional("regex")) is None:
        out.append(("regex", "not installed (pip install regex)"))
    else:
        compiled = regex.compile(parse._MESSAGE.pattern, regex.X | regex.V0)
        out.append(("regex: the same pattern", finditer(compiled, texts)))
    if (re2 := optional("re2")) is None:
        out.append(("google-re2", "not installed (pip install google-re2)"))
    else:
        options = re2.Options()
        options.max_mem = 256 << 20
        compiled = re2.compile(re2_pattern(), options)
        out.append(("google-re2: RE2's dialect", finditer(compiled, texts)))
    if (hyperscan := optional("hyperscan")) is None:
        out.append(("hyperscan", "not installed (pip install hyperscan)"))
    else:
        out.append(("hyperscan prefilter, then re", hyperscan_then_re(hyperscan, texts)))
    return out


def optional(name: str) -> Any:
    """The module ``name``, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def on_hit(_id: int, start: int, _end: int, _flags: int, hits: list[int]) -> None:
    hits.append(start)


def hyperscan_then_re(hs: Any, texts: list[str]) -> Callable[[], int]:
    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    n = len(LITERAL_STARTS)
    db.compile(
        expressions=LITERAL_STARTS,
        ids=list(range(n)),
        elements=n,
        flags=[hs.HS_FLAG_SOM_LEFTMOST] * n,
    )
    match = re.compile(parse._MESSAGE.pattern.encode(), re.X).match
    blobs = [text.encode() for text in texts]

    def run() -> int:
        found = 0
        for blob in blobs:
            hits: list[int] = []
            db.scan(blob, match_event_handler=on_hit, context=hits)
            for start in sorted(set(hits)):  # a line can match two prefilters
                if match(blob, start):
                    found += 1
        return found

    return run


def measure(run: Callable[[], int], runs: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(runs):
        t = time.process_time()
        count = run()
        times.append(time.process_time() - t)
    return statistics.median(times), count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, help="a maillog (default: generate one)")
    p.add_argument("--lines", type=int, default=1_000_000, help="generated corpus size")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.corpus
        if path is None:
            path = Path(tmp) / "maillog"
            generator = [sys.executable, str(HERE / "gen_maillog.py"), "--lines", str(args.lines)]
            subprocess.run([*generator, "-o", str(path)], check=True)
        texts = chunks(path)
        floor, lines = measure(read_loop(path), args.runs)
        rows = [("Python read loop, text (the floor)", floor, lines)]
        for name, run in candidates(texts):
            if isinstance(run, str):
                print(f"{name}: {run}", file=sys.stderr)
                continue
            rows.append((name, *measure(run, args.runs)))
        rows.append(
            ("the whole parser (Parser.scan), for scale", *measure(parser_scan(texts), args.runs))
        )
    shipped = rows[1][1]
    python = f"{sys.implementation.name} {sys.version.split()[0]}"
    print(f"{lines:,} lines, {python}, median of {args.runs}\n")
    print("| scan | CPU s | ÷ read loop | ÷ re | lines or events found |")
    print("|---|---:|---:|---:|---:|")
    for name, cpu, found in rows:
        print(f"| {name} | {cpu:.2f} | {cpu / floor:.1f} | {cpu / shipped:.2f} | {found:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
