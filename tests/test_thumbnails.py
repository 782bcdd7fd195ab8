import io

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from centerclip.index.keys import video_key
from centerclip.index.schema import embeddings_schema
from centerclip.index.store import Store
from centerclip.media.thumbnails import placeholder, thumbnail
from centerclip.search.web.app import Catalog
from tests.videos import frame_index, stripes


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def test_the_middle_frame_scaled_down_to_the_long_side():
    frames = np.stack([stripes(index, 320, 180) for index in range(9)])
    image = decoded(thumbnail(frames, long_side=224))
    assert image.size == (224, 126)
    assert frame_index(np.asarray(image.convert("RGB"))) == 4


def test_small_frames_are_not_scaled_up():
    image = decoded(thumbnail(np.stack([stripes(index, 48, 64) for index in range(2)])))
    assert image.size == (48, 64)
    assert frame_index(np.asarray(image.convert("RGB"))) == 1


@pytest.mark.parametrize("frames", [np.zeros((0, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.uint8),
                                    np.zeros((2, 8, 8, 3), np.float32)])
def test_bad_frames_are_refused(frames):
    with pytest.raises(ValueError, match="frames must be"):
        thumbnail(frames)


def test_placeholder_is_a_jpeg():
    assert decoded(placeholder()).size == (224, 126)


def test_a_table_from_before_thumbnails_gains_the_column_and_reindexes(tmp_path):
    """Written with the old schema; the reader keeps working, a writer adds the (null) column, and
    the indexer counts its rows as not indexed until they carry a thumbnail."""
    old_schema = pa.schema([field for field in embeddings_schema(4) if field.name != "thumbnail"])
    key = video_key("/videos/a.mp4", 1, 1)
    old = pa.table({"id": [key], "video_id": [key], "kind": ["video"], "uri": ["/videos/a.mp4"], "start": [None],
                    "end": [None], "vector": pa.array([[1.0, 0.0, 0.0, 0.0]], pa.list_(pa.float32(), 4)),
                    "model": ["m"], "schedule": ["none"], "metadata": ["{}"],
                    "indexed_at": pa.array([0], pa.timestamp("us", tz="UTC"))}, schema=old_schema)
    lancedb.connect(str(tmp_path)).create_table("videos", old)
    reader = Store.open(str(tmp_path))
    assert "thumbnail" not in reader.videos.schema.names  # a reader changes nothing
    assert Catalog(reader).row(key, ["uri", "thumbnail"]) == {"uri": "/videos/a.mp4", "thumbnail": None}  # a placeholder

    store = Store.open(str(tmp_path), dim=4)
    assert store.videos.schema.field("thumbnail").type == pa.binary()
    assert store.indexed_keys([key]) == {key} and store.indexed_keys([key], with_thumbnail=True) == set()
    store.upsert({**old.drop_columns(["indexed_at"]).to_pydict(), "vector": np.eye(1, 4, dtype=np.float32),
                  "thumbnail": [thumbnail(np.zeros((1, 8, 8, 3), np.uint8))]})
    assert store.indexed_keys([key], with_thumbnail=True) == {key} and store.count() == 1
