"""What the demo reads and writes, without a server: where Forget → Recogniser gets its photos (an
uploaded zip, this session's dataset, an allowed folder; never a path a visitor names), the zip's
checks, the recogniser cache keyed by the photos' content, the workspace's pruning and removal, and
the range checks of the actions' numbers."""

from __future__ import annotations

import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idgen.application import ModelHub, ModelSettings, actions
from idgen.application import face_folders
from idgen.application.face_folders import DATASET, UPLOAD, FaceFolder, extract_face_zip, face_sources, open_face_folder
from idgen.application.workspace import FolderLRU, Workspace
from idgen.errors import ConfigError, DataError


def photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def face_folder(root: Path, people: dict[str, int]) -> Path:
    """``root/PERSON/k.png`` for each person, ``people[person]`` photos of noise (seeded by name)."""
    for person, count in people.items():
        for k in range(count):
            photo(root / person / f"{k}.png", seed=zlib.crc32(f"{person}/{k}".encode()))
    return root


def zipped(path: Path, entries: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:   # a symbolic link entry, as `zip --symlinks` writes it
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def png_bytes(seed: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the uploaded zip
def test_a_zip_of_people_is_unpacked_one_folder_per_person(tmp_path):
    entries = {f"faces/{person}/{k}.png": png_bytes(k) for person in ("ann", "bob") for k in range(3)}
    entries |= {"faces/README.txt": b"notes", "__MACOSX/faces/ann/._0.png": b"x", "faces/bob/.hidden.png": b"x"}
    target = extract_face_zip(zipped(tmp_path / "people.zip", entries), tmp_path / "out")
    found = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert found == [f"{person}/{k}.png" for person in ("ann", "bob") for k in range(3)]
    assert (target / "ann" / "2.png").read_bytes() == png_bytes(2)


@pytest.mark.parametrize("entry, expected", [
    ("../evil/0.png", "points outside the zip's folder"),
    ("ann/../../evil.png", "points outside the zip's folder"),
    ("/tmp/evil/0.png", "points outside the zip's folder"),
    ("ann\\..\\..\\evil.png", "points outside the zip's folder"),
    ("C:/evil/0.png", "points outside the zip's folder"),
    ("link", "is a link"),
])
def test_a_zip_that_could_write_outside_its_folder_is_refused_before_anything_is_written(tmp_path, entry, expected):
    good = {f"{person}/{k}.png": png_bytes(k) for person in ("ann", "bob") for k in range(2)}
    archive = zipped(tmp_path / "bad.zip", good if entry == "link" else {**good, entry: png_bytes(9)},
                     links=("ann/link.png",) if entry == "link" else ())
    with pytest.raises(DataError) as caught:
        extract_face_zip(archive, tmp_path / "work" / "out")
    assert str(caught.value).startswith("bad.zip: the entry") and expected in str(caught.value)
    assert "nothing was unpacked" in str(caught.value)
    assert not (tmp_path / "work").exists() and not (tmp_path / "evil").exists()   # nothing at all was written


def test_zip_sizes_and_counts_are_checked_from_its_table_of_contents(tmp_path, monkeypatch):
    people = {f"{person}/{k}.png": png_bytes(k) for person in ("ann", "bob") for k in range(3)}
    monkeypatch.setattr(face_folders, "MAX_ZIP_PHOTOS", 5)
    with pytest.raises(DataError, match="people.zip: more than 5 photos; upload at most 5"):
        extract_face_zip(zipped(tmp_path / "people.zip", people), tmp_path / "a")
    monkeypatch.setattr(face_folders, "MAX_ZIP_PHOTOS", 6)
    monkeypatch.setattr(face_folders, "MAX_PHOTO_BYTES", 100)
    with pytest.raises(DataError, match=r"'ann/0.png' unpacks to [\d,]+ bytes, more than the 100 a photo may have"):
        extract_face_zip(zipped(tmp_path / "people.zip", people), tmp_path / "b")
    monkeypatch.setattr(face_folders, "MAX_PHOTO_BYTES", 10**6)
    monkeypatch.setattr(face_folders, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(DataError, match=r"the photos unpack to [\d,]+ bytes, more than 1,000; upload fewer"):
        extract_face_zip(zipped(tmp_path / "people.zip", people), tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_a_zip_that_lies_about_a_size_writes_no_more_than_it_declared(tmp_path):
    archive = zipped(tmp_path / "liar.zip", {f"{p}/{k}.png": png_bytes(k) for p in ("ann", "bob") for k in range(2)})
    data = bytearray(archive.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start + 1)) > 0:   # central directory records
        length = int.from_bytes(data[start + 28:start + 30], "little")
        if data[start + 46:start + 46 + length] == b"ann/0.png":
            data[start + 24:start + 28] = (10).to_bytes(4, "little")   # its uncompressed size: 10 bytes
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as z:
        assert z.getinfo("ann/0.png").file_size == 10 < len(png_bytes(0))
    with pytest.raises(DataError, match="liar.zip: not a readable zip file .*CRC"):   # 10 bytes read, CRC wrong
        extract_face_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("entries, expected", [
    ({"ann/0.png": b"", "ann/1.png": b"", "bob/0.png": b""}, r"1 folder\(s\) with at least 2 photos"),
    ({"0.png": b"", "1.png": b""}, "'0.png' is not in a person's folder"),
    ({"a/b/ann/0.png": b"", "a/b/bob/0.png": b""}, "'a/b/ann/0.png' is not in a person's folder"),
])
def test_a_zip_that_is_not_one_folder_per_person_is_refused(tmp_path, entries, expected):
    with pytest.raises(DataError, match=expected):
        extract_face_zip(zipped(tmp_path / "odd.zip", entries), tmp_path / "out")


def test_a_file_that_is_not_a_zip_is_refused_by_its_own_name(tmp_path):
    (tmp_path / "photos.zip").write_text("not a zip")
    with pytest.raises(DataError, match=r"^photos.zip: not a readable zip file"):
        extract_face_zip(tmp_path / "photos.zip", tmp_path / "out")


# ---------------------------------------------------------------------------- the sources
def test_only_the_offered_sources_are_read_and_a_path_is_never_one(tmp_path):
    allowed = str(face_folder(tmp_path / "orl", {"s1": 2, "s2": 2}))
    workspace = Workspace()
    try:
        assert face_sources([allowed]) == [("a zip I upload (one folder of photos per person)", UPLOAD),
                                           ("the Dataset tab's dataset", DATASET),
                                           (f"server folder {allowed}", "folder:0")]
        with workspace.request("forget") as work:
            with open_face_folder("folder:0", allowed=[allowed], workspace=workspace, workdir=work) as faces:
                assert faces == FaceFolder(Path(allowed), allowed)
            messages = []
            for source in (str(tmp_path), str(tmp_path / "missing"), "~", "/", "folder:1", allowed):
                with pytest.raises(ConfigError) as caught:
                    with open_face_folder(source, allowed=[allowed], workspace=workspace, workdir=work):
                        pass
                messages.append(str(caught.value).replace(repr(source), "SOURCE"))
            assert len(set(messages)) == 1, messages   # an existing and a missing path get the same answer
            assert messages[0] == ("unknown face source SOURCE; choose one the page offers: upload, dataset, folder:0")
            with pytest.raises(DataError, match="the Dataset tab has made no dataset on this page yet"):
                with open_face_folder(DATASET, allowed=[], workspace=workspace, workdir=work):
                    pass
            with pytest.raises(DataError, match="no zip uploaded"):
                with open_face_folder(UPLOAD, allowed=[], workspace=workspace, workdir=work):
                    pass
    finally:
        workspace.close()


def test_allowed_folders_are_checked_and_made_absolute_when_the_server_starts(tmp_path, monkeypatch):
    import app

    folder = face_folder(tmp_path / "orl", {"s1": 2, "s2": 2})
    monkeypatch.chdir(tmp_path)
    from idgen.application import settings_from_args

    settings = settings_from_args(app.build_parser().parse_args(["--allow-folder", "orl", "--allow-folder", str(folder)]))
    assert settings.allow_folders == (str(folder), str(folder))
    assert settings_from_args(app.build_parser().parse_args([])).allow_folders == ()   # none by default
    with pytest.raises(ConfigError, match="--allow-folder missing: not a folder"):
        ModelSettings(allow_folders=("missing",))
    with pytest.raises(SystemExit):
        app.main(["--tiny", "--allow-folder", "missing"])


def test_the_dataset_source_is_this_sessions_dataset_while_the_server_keeps_it(tmp_path):
    workspace = Workspace(keep_requests=2)
    try:
        with workspace.request("dataset") as made:
            face_folder(made / "dataset" / "images", {"id0": 2, "id1": 2})
        token = made.name
        with workspace.request("forget") as work:
            with open_face_folder(DATASET, allowed=[], workspace=workspace, workdir=work, dataset=token) as faces:
                assert faces.path == made / "dataset" / "images" and faces.label == "the Dataset tab's dataset"
        for _ in range(2):   # two newer requests: the dataset's folder is pruned
            with workspace.request("generate"):
                pass
        assert not made.exists()
        with workspace.request("forget") as work:
            with pytest.raises(DataError, match="the Dataset tab's dataset is no longer kept .* make it again"):
                with open_face_folder(DATASET, allowed=[], workspace=workspace, workdir=work, dataset=token):
                    pass
    finally:
        workspace.close()


# ---------------------------------------------------------------------------- the workspace
def test_folder_lru_keeps_the_latest_and_never_deletes_one_in_use(tmp_path):
    shelf = FolderLRU(tmp_path, keep=2)
    with shelf.use("long") as long_job:
        for name in ("a", "b", "c"):
            with shelf.use(name) as folder:
                (folder / "out.txt").write_text(name)
        assert long_job.is_dir() and shelf.names() == ["long", "c"]   # the oldest, but in use: kept
    assert shelf.names() == ["c", "long"]          # it finished last, so it is the most recent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "long"]
    with pytest.raises(KeyError):
        with shelf.use("a", create=False):
            pass


def test_a_workspace_is_one_folder_made_on_first_use_and_deleted_by_close(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    workspace = Workspace(keep_requests=2)
    assert list(tmp_path.iterdir()) == []      # nothing until a request comes
    folders = []
    for _ in range(3):
        with workspace.request("generate") as folder:
            (folder / "image.png").write_bytes(b"png")
            folders.append(folder)
    [root] = tmp_path.iterdir()
    assert root.name.startswith("idgen-demo-") and root == workspace.root
    assert not folders[0].exists() and folders[1].is_dir() and folders[2].is_dir()    # pruned beyond 2
    with pytest.raises(RuntimeError):
        with workspace.request("generate") as failed:
            (failed / "half.png").write_bytes(b"half")
            raise RuntimeError("the request failed")
    assert not failed.exists()                  # a failed request leaves nothing
    workspace.close()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- the recogniser cache
@pytest.fixture
def tiny_hub():
    return ModelHub(ModelSettings(tiny=True))


def forget(hub, root: Path, workspace: Workspace, **kwargs) -> dict:
    with workspace.request("forget") as work:
        return actions.forget_in_recognizer(hub, FaceFolder(root, root.name), work, workspace.cache,
                                            base_epochs=1, epochs=1, **kwargs)


def test_the_cached_recogniser_follows_the_photos_not_the_folder(tmp_path, tiny_hub, one_thread):
    """Same folder, new people: a new recogniser (the old one was reused before); people added: it
    works (it failed with 'point model.path at a new folder'); the first photos again: their recogniser."""
    import shutil

    workspace = Workspace()
    try:
        root = face_folder(tmp_path / "faces", {"ann": 3, "bob": 3, "cid": 3})
        first = forget(tiny_hub, root, workspace, identities=["ann"])
        assert first["report"]["base"]["trained"] is True
        assert forget(tiny_hub, root, workspace, identities=["bob"])["report"]["base"]["trained"] is False

        shutil.copytree(root, tmp_path / "first")
        shutil.rmtree(root / "ann"), shutil.rmtree(root / "bob")          # two people swapped for two others
        face_folder(root, {"dan": 3, "eve": 3})
        swapped = forget(tiny_hub, root, workspace, identities=["dan"])
        assert swapped["report"]["base"]["trained"] is True and swapped["report"]["tasks"] == [["dan"]]
        assert swapped["report"]["data"]["identities"] == 3

        face_folder(root, {"fay": 3})                                      # a person added
        added = forget(tiny_hub, root, workspace, count=2)
        assert added["report"]["base"]["trained"] is True and added["report"]["data"]["identities"] == 4

        photo(root / "fay" / "0.png", seed=12345)                          # one photo changed
        assert forget(tiny_hub, root, workspace, count=1)["report"]["base"]["trained"] is True

        shutil.rmtree(root), shutil.copytree(tmp_path / "first", root)    # the first photos again
        assert forget(tiny_hub, root, workspace, identities=["cid"])["report"]["base"]["trained"] is False
        assert len(workspace.cache.names()) == 4
    finally:
        workspace.close()


def test_forget_inputs_are_range_checked_with_the_range_in_the_message(tmp_path, tiny_hub):
    workspace = Workspace()
    try:
        root = face_folder(tmp_path / "faces", {"ann": 2, "bob": 2, "cid": 2})
        for count in (-1, 0, 3, 1.5):
            with pytest.raises(ConfigError, match=f"how many to draw must be an integer from 1 to 2, not {count}"):
                forget(tiny_hub, root, workspace, count=count)
        with pytest.raises(ConfigError, match=r"people to forget: \['zed'\] are not among the 3 people of faces "
                                              r"\(ann, bob, cid\)"):
            forget(tiny_hub, root, workspace, identities=["zed"])
        one = face_folder(tmp_path / "one", {"ann": 2})
        with pytest.raises(DataError, match="^one: found 1 identity folder"):   # the label, not the server path
            forget(tiny_hub, one, workspace)
        assert workspace.cache.names() == []
    finally:
        workspace.close()


@pytest.mark.parametrize("seed", [2**70, -1, 1.5, float("nan"), float("inf")])
def test_a_seed_out_of_range_is_refused_with_the_range(tiny_hub, seed):
    message = f"seed must be an integer from 0 to 4,294,967,295, not {seed}"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        actions.random_identity(tiny_hub, seed)
    identity = actions.IdentityInput(vector=actions.normalize(__import__("torch").ones(128)))
    with pytest.raises(ConfigError, match="seed must be an integer from 0 to 4,294,967,295"):
        actions.generate_images(tiny_hub, identity, seed=seed)
    with pytest.raises(ConfigError, match="count must be an integer ≥ 1, not -1"):
        actions.generate_images(tiny_hub, identity, count=-1)
    assert tiny_hub.loaded() == []     # refused before any model was loaded


def test_an_identity_embedded_for_one_model_is_refused_by_another(tiny_hub):
    """Each model has its own recogniser's embedding space: a vector made for Arc2Face means nothing to
    InstantID or InfiniteYou, and generating with it is refused before any model loads."""
    import torch

    identity = actions.IdentityInput(vector=actions.normalize(torch.ones(128)))
    assert identity.style == "arc2face"
    for style in ("instantid", "infiniteyou"):
        with pytest.raises(ConfigError, match=f"embedded by the arc2face model's recogniser.* style='{style}'"):
            actions.generate_images(tiny_hub, identity, style=style)
    assert tiny_hub.loaded() == []
