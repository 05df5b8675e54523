"""Every kind of photo a user may pass loads as upright 8-bit RGB, or fails naming the file."""

import numpy as np
import pytest
from hostile_files import png_claiming
from PIL import Image

from idgen.errors import ImageReadError
from idgen.faces import load_image


@pytest.fixture
def photo(faces_dir):
    return faces_dir / "Aaron_Peirsol_0001.jpg"


def test_reads_jpeg_as_rgb_uint8(photo):
    image = load_image(photo)
    assert image.shape == (250, 250, 3) and image.dtype == np.uint8
    assert np.array_equal(image, np.asarray(Image.open(photo).convert("RGB")))


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ImageReadError, match="nothere.jpg: no such file"):
        load_image(tmp_path / "nothere.jpg")


def test_non_image_file(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a JPEG")
    with pytest.raises(ImageReadError, match=r"notes\.jpg: not an image file"):
        load_image(bad)


def test_truncated_jpeg(tmp_path, photo):
    data = photo.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg: the image is truncated or corrupt"):
        load_image(cut)


def test_greyscale_becomes_three_equal_channels(tmp_path, photo):
    path = tmp_path / "grey.png"
    Image.open(photo).convert("L").save(path)
    image = load_image(path)
    assert image.shape == (250, 250, 3)
    assert np.array_equal(image[..., 0], image[..., 2])


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:20, :, 3] = 255  # top half opaque red, bottom half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = load_image(path)
    assert tuple(image[5, 5]) == (200, 0, 0)
    assert tuple(image[30, 5]) == (255, 255, 255)


def test_sixteen_bit_scaled_to_eight(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    image = load_image(path)
    expected = np.round(ramp.astype(np.float64) / 65535 * 255).astype(np.uint8)
    assert image.dtype == np.uint8
    assert np.abs(image[..., 0].astype(int) - expected).max() <= 1


def test_cmyk_jpeg(tmp_path, photo):
    path = tmp_path / "cmyk.jpg"
    Image.open(photo).convert("CMYK").save(path)
    image = load_image(path)
    reference = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    assert image.shape == (250, 250, 3)
    assert np.abs(image.astype(int) - reference).mean() < 12  # JPEG round trip, same picture


def test_exif_orientation_applied(tmp_path, photo):
    upright = Image.open(photo)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways, as a camera held on its side does
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.shape == (250, 250, 3)
    assert np.abs(image.astype(int) - np.asarray(upright).astype(int)).mean() < 6


def test_arrays_and_pil_accepted(photo):
    pil = Image.open(photo)
    assert np.array_equal(load_image(pil), load_image(np.asarray(pil)))
    grey = load_image(np.zeros((10, 12), np.float32))
    assert grey.shape == (10, 12, 3)
    with pytest.raises(ImageReadError, match="shape"):
        load_image(np.zeros((3, 4, 5, 6)))


def test_too_many_pixels_refused_from_the_header(tmp_path, monkeypatch):
    from idgen.faces.image import MAX_DECODED_BYTES, decoded_bytes

    path = png_claiming(tmp_path / "claims-9000x9000.png", 9000, 9000)   # over idgen's cap, under PIL's own bomb limit
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    assert decoded_bytes(9000, 9000) > MAX_DECODED_BYTES >= decoded_bytes(8000, 8000)
    with pytest.raises(ImageReadError, match=r"claims-9000x9000.png: 9000×9000 pixels would take 309 MiB to decode, "
                                             r"more than idgen decodes \(256 MiB\); downscale"):
        load_image(path)
    assert decoded == []   # refused before any pixel was decoded
    monkeypatch.undo()
    with pytest.raises(ImageReadError, match=r"claims-30000x30000.png: .*(decompression bomb|more than idgen decodes)"):
        load_image(png_claiming(tmp_path / "claims-30000x30000.png", 30000, 30000))


def test_a_strip_one_pixel_wide_is_refused_by_the_memory_it_would_take(tmp_path, monkeypatch):
    """A real 122 KB PNG, 1×63,000,000 pixels: fewer pixels than an 8000×8000 photo, but PIL spends
    bookkeeping on each row (it took 2.4 GB to load), so the cap is on memory, not on pixels: refused
    from the header, like a bomb, without decoding it."""
    from hostile_files import png_strip

    strip = png_strip(tmp_path / "strip.png", 63_000_000)
    assert strip.stat().st_size < 200_000
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ImageReadError, match=r"strip.png: 1×63000000 pixels would take 1,682 MiB to decode, "
                                             r"more than idgen decodes"):
        load_image(strip)
    assert decoded == []


def test_an_oversized_file_is_refused_from_its_size_without_reading_it(tmp_path):
    """A 3 GB (sparse) .jpg: refused from its size on disk, before a byte of it is read into memory."""
    import time
    import tracemalloc

    from hostile_files import sparse_file

    from idgen.faces.image import read_image_bytes

    huge = sparse_file(tmp_path / "huge.jpg", 3 * 2**30)
    tracemalloc.start()
    started = time.perf_counter()
    for read in (load_image, read_image_bytes):
        with pytest.raises(ImageReadError, match=r"huge.jpg: 3,072 MiB is more than idgen reads for one image "
                                                 r"\(256 MiB\); downscale or re-encode it"):
            read(huge)
    assert time.perf_counter() - started < 1.0
    assert tracemalloc.get_traced_memory()[1] < 2**20
    tracemalloc.stop()


def test_a_folder_a_link_loop_and_a_broken_link_say_what_they_are(tmp_path):
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "album.jpg").mkdir()
    cases = {"album.jpg": "is a folder: pass an image file",
             "loop.jpg": r"a symbolic link loop \(the link leads back to itself\); pass an image file",
             "broken.jpg": r"a symbolic link to .*gone.jpg, which does not exist; pass an image file"}
    for name, message in cases.items():
        with pytest.raises(ImageReadError, match=rf"{name}: {message}"):
            load_image(tmp_path / name)


def test_animated_gif_gives_its_first_frame_and_the_content_decides_the_format(tmp_path):
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((200, 0, 0), (0, 0, 200))]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = load_image(tmp_path / "moving.gif")
    assert first.shape == (40, 40, 3) and first[..., 0].mean() > 150 and first[..., 2].mean() < 50
    Image.new("RGB", (30, 20), (0, 128, 0)).save(tmp_path / "really-a-png.jpg", format="PNG")
    assert load_image(tmp_path / "really-a-png.jpg")[0, 0].tolist() == [0, 128, 0]
