"""Search indexed videos with a text query, or for videos like a video file.

    python pipelines/search.py "a red circle moves left"              # centerclip.lancedb, as index.py writes it
    python pipelines/search.py "a red circle moves left" --db videos.lancedb --k 5 --json
    python pipelines/search.py "a red circle moves left" --where kind=moment
    python pipelines/search.py --video clip.mp4 --db videos.lancedb

Results are videos ranked by their best row (the whole video or one of its moments). Search with
the model that indexed the table (--model, --pretrained); the logic lives in centerclip.search.searcher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import cli  # light: torch and LanceDB load after the arguments are parsed
from ..index.keys import FILTERABLE
from ..media.sources import path_from_uri

if TYPE_CHECKING:
    from ..search.searcher import Result


def parse_where(text: str) -> tuple[str, str]:
    column, separator, value = text.partition("=")
    if not separator or column not in FILTERABLE:
        raise argparse.ArgumentTypeError(
            f"expected COLUMN=VALUE with COLUMN one of {', '.join(FILTERABLE)}, got {text!r}")
    return column, value


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("query", nargs="?", help="what to look for, e.g. \"a red circle moves left\"")
    parser.add_argument("--video", metavar="PATH",
                        help="instead of a text query: find videos similar to this file")
    parser.add_argument("--db", default="centerclip.lancedb",
                        help="LanceDB database written by pipelines/index.py: a folder or object-store URI "
                             "(default: %(default)s)")
    parser.add_argument("--table", default="videos", help="embeddings table in the database (default: %(default)s)")
    parser.add_argument("--k", type=cli.positive(int), default=5, help="number of videos to return (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    parser.add_argument("--model", default=None,
                        help="open_clip model name the collection was indexed with (default: the built-in centerclip-tiny)")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip pretrained tag, weights file or checkpoint of that model (default: the model's own)")
    parser.add_argument("--where", type=parse_where, action="append", default=[], metavar="COLUMN=VALUE",
                        help=f"keep only rows whose COLUMN equals VALUE ({', '.join(FILTERABLE)}); "
                             "repeat a column to accept any of several values, repeat columns to require all")
    return parser


def main(argv: Sequence[str] | None = None) -> list[Result]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.query is None) == (args.video is None):
        parser.error("give either a text query or --video PATH")
    local = path_from_uri(args.video) if args.video is not None else None
    if local is not None and not os.path.isfile(local):  # refused before a model loads; s3://... is checked when read
        parser.error(f"--video {args.video}: no such file")
    from ..index.store import Store

    Store.open(args.db, table=args.table)  # a wrong db is one line in a second, before the model loads
    from ..search.searcher import SearchConfig, format_table, search
    from ..media.decoding import VideoDecodeError

    config = SearchConfig(db=args.db, table=args.table, model=args.model, pretrained=args.pretrained,
                          k=args.k, where=tuple(args.where))
    try:
        results = search(config, args.query, args.video, note=lambda line: print(line, file=sys.stderr))
    except VideoDecodeError as error:
        raise ValueError(f"--video {args.video}: {error}") from None
    print(json.dumps([result.to_dict() for result in results], indent=2) if args.json else format_table(results))
    return results

