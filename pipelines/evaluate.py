"""Text-video retrieval evaluation on a benchmark split (see --help).

The command itself lives in the library, centerclip/commands/evaluate.py, so tests call it directly.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: sys.path[0] is pipelines/, the repository root holds centerclip/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from centerclip import cli  # noqa: E402
from centerclip.commands.evaluate import main  # noqa: E402

if __name__ == "__main__":
    cli.run(main)
