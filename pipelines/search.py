"""Search indexed videos with a text query (the logic lives in centerclip.search).

    python pipelines/search.py "a red circle moves left" --db videos.lancedb [--k 5] [--json]
    python pipelines/search.py --video clip.mp4 --db videos.lancedb
        [--table videos] [--model NAME --pretrained PATH] [--where COLUMN=VALUE ...]
"""

from centerclip.search import main

if __name__ == "__main__":
    main()
