"""Listing: every entry of a folder, glob, manifest or path ends as a source or a probe error."""

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from centerclip.media.sources import path_from_uri
from centerclip.index.listing import list_inputs, sniff
from tests.videos import write_audio, write_video


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("listing")
    outside = tmp_path_factory.mktemp("outside")
    write_video(root / "a.mp4", frames=3)
    write_video(root / "clip[1].mp4", frames=3)
    write_video(root / "clip1.mp4", frames=4)
    write_video(root / "no_extension", frames=3, container="mp4")
    write_video(root / "vp8.ogg", codec="libvpx", frames=3)
    (root / "sub").mkdir()
    write_video(root / "sub" / "b.mkv", frames=3)
    write_video(root / "sub" / ".hidden.mp4", frames=3)
    write_audio(root / "voice.m4a")
    (root / "readme.txt").write_text("not a video")
    (root / "empty.bin").touch()
    os.mkfifo(root / "pipe.mp4")
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(root / "socket.mp4"))
    os.symlink(root / "missing.mp4", root / "broken.mp4")
    os.symlink(root / "loop_b.mp4", root / "loop_a.mp4")
    os.symlink(root / "loop_a.mp4", root / "loop_b.mp4")
    os.symlink(root / "sub", root / "folder_link")
    os.symlink(root / "a.mp4", root / "0_link_to_a.mp4")  # sorts before a.mp4, still a.mp4 wins
    real = write_video(outside / "real.mp4", frames=3)
    os.symlink(real, root / "link1.mp4")
    os.symlink(real, root / "link2.mp4")
    write_video(Path(os.fsdecode(os.fsencode(root) + b"/bad\xff.mp4")), frames=3)
    return root


def test_a_folder_lists_every_entry_once_with_a_reason(folder):
    listing = list_inputs([str(folder)])
    sources = {Path(path_from_uri(source.uri)).relative_to(folder).as_posix() for source in listing.sources}
    errors = {Path(path_from_uri(error["uri"])).relative_to(folder).as_posix(): error["reason"] for error in listing.errors}
    bad = os.fsdecode(b"bad\xff.mp4")
    # Two symlinks to a file outside the folder: the first the walk meets is the source (folders
    # are walked in the file system's order, not sorted), the other its duplicate.
    [kept] = sources & {"link1.mp4", "link2.mp4"}
    other = ({"link1.mp4", "link2.mp4"} - {kept}).pop()
    assert sources == {"a.mp4", "clip[1].mp4", "clip1.mp4", "no_extension", "vp8.ogg", "sub/b.mkv", "sub/.hidden.mp4",
                       "voice.m4a", kept, bad}
    assert errors == {
        "readme.txt": "unknown extension and not a video container", "empty.bin": "empty file",
        "pipe.mp4": "not a regular file: named pipe", "socket.mp4": "not a regular file: socket",
        "broken.mp4": "broken symlink", "loop_a.mp4": "symlink loop", "loop_b.mp4": "symlink loop",
        "folder_link": "not a regular file: symlink to a folder",
        "0_link_to_a.mp4": f"duplicate: same file as {folder / 'a.mp4'}",
        other: f"duplicate: same file as {folder / kept}",
    }
    assert all(error["stage"] == "probe" for error in listing.errors)
    uris = [source.uri for source in listing.sources]
    assert len(set(uris)) == len(uris) and f"file://{folder}/bad%FF.mp4" in uris
    assert all(json.dumps(uri).encode("utf-8") for uri in uris)  # every uri is storable text
    assert listing.covers(str(folder / "gone.mp4")) and listing.covers(f"file://{folder}/sub/gone%FF.mp4")
    assert not listing.covers(str(folder) + "-other/x.mp4") and not listing.covers("s3://bucket/x.mp4")


def test_an_existing_path_is_a_file_even_with_glob_characters(folder):
    literal = list_inputs([str(folder / "clip[1].mp4")])
    assert [source.uri for source in literal.sources] == [str(folder / "clip[1].mp4")] and not literal.errors
    assert not literal.covers(str(folder / "clip1.mp4"))
    pattern = list_inputs([str(folder / "clip[0-9].mp4")])
    assert [source.uri for source in pattern.sources] == [str(folder / "clip1.mp4")]
    stars = list_inputs([str(folder / "**" / "*.m*")])
    assert {Path(source.uri).name for source in stars.sources} == {"a.mp4", "clip[1].mp4", "clip1.mp4", "b.mkv",
                                                                    "voice.m4a", "link1.mp4", "bad%FF.mp4"}
    assert stars.covers(str(folder / "sub" / "deep" / "gone.mp4")) and not stars.covers(str(folder / "gone.txt"))
    assert not stars.covers(str(folder / "sub" / ".hidden.mp4"))  # as glob.glob: no hidden files
    missing = list_inputs([str(folder / "nothing*.mp4"), str(folder / "nowhere.mp4")])
    assert [error["reason"] for error in missing.errors] == ["the glob matches no file", "no such file or folder"]


def test_manifests_take_fields_of_any_size_and_refuse_only_an_oversized_row(folder, tmp_path):
    import csv as csv_module

    from centerclip.index.listing import MAX_METADATA_BYTES

    transcript = "word " * 40_000  # 200 KiB: over the csv module's default field limit of 128 KiB
    manifest = tmp_path / "export.csv"
    with open(manifest, "w", newline="") as file:
        writer = csv_module.writer(file)
        writer.writerow(["uri", "transcript"])
        writer.writerow([str(folder / "a.mp4"), transcript])
        writer.writerow([str(folder / "clip1.mp4"), "x" * (MAX_METADATA_BYTES + 1)])
    listing = list_inputs([str(manifest)])
    assert [(source.uri, json.loads(source.metadata)) for source in listing.sources] == \
        [(str(folder / "a.mp4"), {"transcript": transcript})]
    assert [(error["uri"].rpartition("#")[2], error["reason"][:33]) for error in listing.errors] == \
        [("row=3", "its metadata columns hold 8.0 MiB")]


def test_every_duplicate_manifest_line_is_reported_under_its_row(folder, tmp_path):
    manifest = tmp_path / "twice.jsonl"
    a = str(folder / "a.mp4")
    manifest.write_text("\n".join(json.dumps({"uri": uri}) for uri in
                                  [a, a, "file://" + a, str(folder / "0_link_to_a.mp4"), str(folder / "clip1.mp4")]) + "\n")
    listing = list_inputs([str(manifest)])
    assert [source.uri for source in listing.sources] == [a, str(folder / "clip1.mp4")]
    reported = {error["uri"].rpartition("#")[2]: error["reason"] for error in listing.errors}
    assert sorted(reported) == ["row=2", "row=3", "row=4"]  # each line after the first names the first
    assert all(reason.startswith("duplicate: ") and reason.endswith("#row=1, indexed once") for reason in reported.values())


def test_a_named_file_is_tried_whatever_its_name_and_a_manifest_row_can_fail_alone(folder, tmp_path):
    named = list_inputs([str(folder / "readme.txt")])
    assert [source.uri for source in named.sources] == [str(folder / "readme.txt")]
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("\n".join([json.dumps({"uri": str(folder / "a.mp4"), "id": "A", "lang": "en"}),
                                   "{not json", json.dumps({"id": "no uri"}),
                                   json.dumps({"uri": str(folder / "gone.mp4")})]) + "\n")
    listing = list_inputs([str(manifest)])
    assert [(source.uri, json.loads(source.metadata)) for source in listing.sources] == \
        [(str(folder / "a.mp4"), {"id": "A", "lang": "en"})]
    assert [(error["uri"].rpartition("#")[2] if "#" in error["uri"] else error["uri"], error["reason"][:12])
            for error in listing.errors] == [("row=2", "not a JSON o"), ("row=3", "no 'uri' val"),
                                             (str(folder / "gone.mp4"), "no such file")]
    assert not listing.covers(str(folder / "b.mp4"))  # a manifest speaks for its rows only
    (tmp_path / "broken.parquet").write_text("not parquet")
    [error] = list_inputs([str(tmp_path / "broken.parquet")]).errors
    assert error["reason"].startswith("cannot read manifest: ")


def test_sniffing_knows_containers_not_extensions():
    assert sniff(b"\x00\x00\x00\x18ftypisom") and sniff(b"\x1a\x45\xdf\xa3rest") and sniff(b"OggS\x00")
    assert sniff(b"GIF89a") and sniff(b"RIFF\x00\x00\x00\x00AVI LIST") and sniff(b"\x00\x00\x01\xba")
    assert sniff(bytes([0x47] + [0] * 187) * 3)
    assert not sniff(b"\x00\x00\x00\x18ftypheic") and not sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert not sniff(b"hello world") and not sniff(b"")


def test_unreadable_entries_are_permission_errors():
    # In /tmp, not tmp_path: another user must be able to reach it. Root reads anything, so as root
    # the listing runs with the effective uid of "nobody".
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)
        write_video(root / "readable.mp4", frames=3).chmod(0o644)
        write_video(root / "locked.mp4", frames=3).chmod(0)
        (root / "closed").mkdir()
        write_video(root / "closed" / "inside.mp4", frames=3)
        (root / "closed").chmod(0)
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            listing = list_inputs([str(root)])
        finally:
            if as_root:
                os.seteuid(0)
        assert [source.uri for source in listing.sources] == [str(root / "readable.mp4")]
        assert sorted((Path(e["uri"]).name, e["reason"]) for e in listing.errors) == [
            ("closed", "permission denied"), ("locked.mp4", "permission denied")]
        # What is under a folder that could not be read is unknown, not gone: never pruned.
        assert listing.covers(str(root / "gone.mp4")) and not listing.covers(str(root / "closed" / "inside.mp4"))
    finally:
        (root / "closed").chmod(0o755)
        shutil.rmtree(root)
