"""CIFAR-10, CIFAR-100 and SVHN read from tiny files in the official formats (tests/image_files.py)."""

import functools
import gzip
import http.server
import threading

import numpy as np
import pytest
import torch

from layerwise import UserError
from layerwise import fetch as fetching
from layerwise.cli import main
from layerwise.tasks import TASKS
from layerwise.tasks.images import Images, random_crop_flip

from image_files import write_cifar10, write_cifar100, write_svhn


def whole_train(data):
    """Train and validation images back together, as uint8 (the order is the split's)."""
    return torch.cat([data.train.x.data, data.val.x.data]), torch.cat([data.train.y, data.val.y])


def same_set(images_a, labels_a, images_b, labels_b):
    """The same (image, label) pairs, in any order."""
    key = lambda x, y: sorted(zip(map(bytes, np.asarray(x).reshape(len(x), -1)), np.asarray(y).tolist()))  # noqa: E731
    return key(images_a, labels_a) == key(images_b, labels_b)


def test_cifar10_archive_reads_back_the_images_and_labels_written(tmp_path):
    (train_x, train_y), (test_x, test_y) = write_cifar10(tmp_path)
    data = TASKS["cifar10"](root=str(tmp_path), verify=False, val_size=10).load()
    assert torch.equal(data.test.x.data, torch.as_tensor(test_x))  # test keeps its order
    assert torch.equal(data.test.y, torch.as_tensor(test_y))
    assert same_set(*whole_train(data), train_x, train_y)  # all five batches, none lost or changed


def test_cifar_rows_are_red_green_blue_planes(tmp_path):
    write_cifar10(tmp_path)
    data = TASKS["cifar10"](root=str(tmp_path), verify=False, val_size=10).load()
    # The row layout is fixed by the format: the first 1024 bytes are the red plane, row by row.
    import tarfile

    from layerwise.tasks.images import unpickle
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
        row = unpickle(tar.extractfile("cifar-10-batches-py/test_batch").read())["data"][0]
    image = data.test.x.data[0]
    assert image.shape == (3, 32, 32)
    assert torch.equal(image[0, 0], torch.as_tensor(row[:32]))  # red, top row
    assert torch.equal(image[1, 0], torch.as_tensor(row[1024:1056]))  # green, top row
    assert torch.equal(image[2, 31], torch.as_tensor(row[-32:]))  # blue, bottom row


def test_an_unpacked_cifar_folder_is_read_like_the_archive(tmp_path):
    import tarfile

    write_cifar10(tmp_path / "a")
    with tarfile.open(tmp_path / "a" / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "b", filter="data")
    a = TASKS["cifar10"](root=str(tmp_path / "a"), verify=False, val_size=10).load()
    b = TASKS["cifar10"](root=str(tmp_path / "b"), verify=False, val_size=10).load()
    assert torch.equal(a.train.x.data, b.train.x.data) and torch.equal(a.test.y, b.test.y)


def test_cifar100_reads_fine_labels_by_default_and_coarse_on_request(tmp_path):
    (train_x, fine, coarse), (test_x, test_fine, test_coarse) = write_cifar100(tmp_path)
    fine_task = TASKS["cifar100"](root=str(tmp_path), verify=False, val_size=10)
    coarse_task = TASKS["cifar100"](root=str(tmp_path), verify=False, val_size=10, labels="coarse")
    assert (fine_task.num_classes, coarse_task.num_classes) == (100, 20)
    a, b = fine_task.load(), coarse_task.load()
    assert torch.equal(a.test.y, torch.as_tensor(test_fine))
    assert torch.equal(b.test.y, torch.as_tensor(test_coarse))
    assert same_set(*whole_train(a), train_x, fine)
    assert same_set(*whole_train(b), train_x, coarse)
    with pytest.raises(UserError, match="labels must be 'fine' or 'coarse'"):
        TASKS["cifar100"](labels="superclass")


def test_svhn_reads_mat_files_and_maps_label_10_to_digit_0(tmp_path):
    (train_x, train_y), (test_x, test_y), (extra_x, extra_y) = write_svhn(tmp_path, extra=12)
    data = TASKS["svhn"](root=str(tmp_path), verify=False, val_size=10).load()
    assert torch.equal(data.test.x.data, torch.as_tensor(test_x))  # (32, 32, 3, N) turned to (N, 3, 32, 32)
    assert torch.equal(data.test.y, torch.as_tensor(test_y))
    assert data.test.y.min() == 0 and data.test.y.max() <= 9
    assert same_set(*whole_train(data), train_x, train_y)
    with_extra = TASKS["svhn"](root=str(tmp_path), verify=False, val_size=10, extra=True).load()
    assert same_set(*whole_train(with_extra), np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y]))


def test_validation_split_has_its_size_and_is_fixed_by_split_seed(tmp_path):
    write_cifar10(tmp_path)  # 100 training images
    task = lambda **kw: TASKS["cifar10"](root=str(tmp_path), verify=False, val_size=30, **kw)  # noqa: E731
    a, again, other = task().load(seed=0), task().load(seed=5), task(split_seed=1).load()
    assert (len(a.train), len(a.val), len(a.test)) == (70, 30, 20)
    assert torch.equal(a.val.x.data, again.val.x.data)  # the run's seed does not move the split
    assert not torch.equal(a.val.x.data, other.val.x.data)
    train_rows = {bytes(r.numpy()) for r in a.train.x.data.reshape(70, -1)}
    assert not any(bytes(r.numpy()) in train_rows for r in a.val.x.data.reshape(30, -1))


def test_default_validation_sizes_are_the_densenet_papers():
    assert TASKS["cifar10"]().val_size == TASKS["cifar100"]().val_size == 5000
    assert TASKS["svhn"]().val_size == 6000


def test_a_validation_split_larger_than_the_training_set_is_refused(tmp_path):
    write_svhn(tmp_path)
    with pytest.raises(UserError, match="val_size must be between 1 and 79"):
        TASKS["svhn"](root=str(tmp_path), verify=False).load()  # 6,000 of 80


def test_images_are_normalised_per_channel_by_the_training_split(tmp_path):
    write_cifar10(tmp_path)
    data = TASKS["cifar10"](root=str(tmp_path), verify=False, val_size=10).load()
    x = data.train.x[torch.arange(len(data.train))]
    assert x.dtype == torch.float32 and x.shape == (90, 3, 32, 32)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    assert torch.equal(data.val.x.mean, data.train.x.mean)  # every split uses the training statistics
    assert torch.equal(data.test.x.std, data.train.x.std)


def test_a_truncated_archive_is_reported_as_corrupt(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=r"corrupt or truncated.*layerwise fetch cifar10"):
        TASKS["cifar10"](root=str(tmp_path), verify=False, val_size=10).load()


def test_an_archive_whose_batch_is_not_images_is_reported_as_corrupt(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-python.tar.gz"
    # Corrupt the decompressed bytes but keep a valid gzip stream: the pickles no longer parse.
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[600:2000] = b"\x00" * 1400
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(UserError, match="corrupt or truncated"):
        TASKS["cifar10"](root=str(tmp_path), verify=False, val_size=10).load()


def test_a_pickle_that_names_other_code_is_refused(tmp_path):
    import pickle

    from image_files import write_tar_gz
    write_tar_gz(tmp_path / "cifar-100-python.tar.gz", {
        "cifar-100-python/train": pickle.dumps({"data": __import__("os").getcwd}, protocol=2),
        "cifar-100-python/test": b""})
    with pytest.raises(UserError, match="not allowed in a CIFAR batch"):
        TASKS["cifar100"](root=str(tmp_path), verify=False, val_size=10).load()


def test_a_truncated_mat_file_is_reported_as_corrupt(tmp_path):
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(UserError, match=r"train_32x32.mat is corrupt or truncated.*layerwise fetch svhn"):
        TASKS["svhn"](root=str(tmp_path), verify=False, val_size=10).load()


def test_a_file_that_fails_its_checksum_is_refused_on_load(tmp_path):
    write_cifar10(tmp_path)  # not the official archive, so its MD5 differs from the published one
    with pytest.raises(UserError, match=r"not the published c58f30108f718f92721af3b95e74349a.*corrupt or truncated"):
        TASKS["cifar10"](root=str(tmp_path), val_size=10).load()


def test_missing_files_name_the_files_the_place_and_the_fetch_command(tmp_path):
    with pytest.raises(UserError) as err:
        TASKS["svhn"](root=str(tmp_path)).load()
    message = str(err.value)
    assert "train_32x32.mat, test_32x32.mat not found in " + str(tmp_path) in message
    assert f"layerwise fetch svhn --root {tmp_path}" in message
    assert "download = true" in message
    assert not TASKS["svhn"](root=str(tmp_path)).available()


def test_the_data_root_comes_from_the_environment_when_no_root_is_set(tmp_path, monkeypatch):
    write_svhn(tmp_path / "svhn")
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path))
    task = TASKS["svhn"](verify=False, val_size=10)
    assert task.available()
    assert len(task.load().test) == 20


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over `tmp_path/served`, standing in for the official sources."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def serve_as_official(monkeypatch, served_dir, url, name):
    """Point corpus `name` at the local server, with the served files' real MD5s."""
    files = tuple(fetching.Remote(f"{url}/{r.filename}", fetching.md5sum(served_dir / r.filename))
                  for r in fetching.CORPORA[name].files)
    monkeypatch.setitem(fetching.CORPORA, name, fetching.Corpus(fetching.CORPORA[name].subdir, files))
    return files


def test_fetch_downloads_and_verifies_each_file(tmp_path, server, monkeypatch):
    served, url = server
    write_svhn(served)
    serve_as_official(monkeypatch, served, url, "svhn")
    paths = fetching.fetch("svhn", str(tmp_path / "data"), progress=False)
    assert [p.name for p in paths] == ["train_32x32.mat", "test_32x32.mat"]
    assert all(p.read_bytes() == (served / p.name).read_bytes() for p in paths)


def test_fetch_refuses_a_download_that_fails_its_checksum(tmp_path, server, monkeypatch):
    served, url = server
    write_cifar10(served)
    monkeypatch.setitem(fetching.CORPORA, "cifar10", fetching.Corpus(
        "cifar10", (fetching.Remote(f"{url}/cifar-10-python.tar.gz", "0" * 32),)))
    with pytest.raises(UserError, match="does not match its published MD5 0000"):
        fetching.fetch("cifar10", str(tmp_path / "data"), progress=False)
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()  # nothing half-checked is left


def test_a_failed_download_names_the_url_the_file_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setitem(fetching.CORPORA, "cifar10", fetching.Corpus(
        "cifar10", (fetching.Remote("http://127.0.0.1:9/cifar-10-python.tar.gz", "0" * 32),)))
    with pytest.raises(UserError, match=r"could not download http://127.0.0.1:9/cifar-10-python.tar.gz") as err:
        TASKS["cifar10"](root=str(tmp_path), download=True).load()
    assert f"`layerwise fetch cifar10 --root {tmp_path}`" in str(err.value)
    assert f"put cifar-10-python.tar.gz in {tmp_path}" in str(err.value)


def test_download_on_first_use_fetches_then_loads(tmp_path, server, monkeypatch):
    served, url = server
    (train_x, train_y), _ = write_cifar10(served)
    (remote,) = serve_as_official(monkeypatch, served, url, "cifar10")
    task = TASKS["cifar10"](root=str(tmp_path / "data"), download=True, val_size=10)
    assert not task.available()
    monkeypatch.setattr(fetching, "verify", lambda path, remote_, *a: None if remote_ == remote else 1 / 0)
    data = task.load()
    assert task.available()
    assert same_set(*whole_train(data), train_x, train_y)


def test_fetch_command_line_puts_files_in_root(tmp_path, server, monkeypatch, capsys):
    served, url = server
    write_svhn(served)
    serve_as_official(monkeypatch, served, url, "svhn")
    assert main(["fetch", "svhn", "--root", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "test_32x32.mat").is_file()
    assert str(tmp_path / "d" / "train_32x32.mat") in capsys.readouterr().out
    assert main(["fetch", "mnist"]) == 2
    assert "unknown corpus 'mnist'; valid: cifar10, cifar100, svhn, svhn-extra" in capsys.readouterr().err


def test_registry_holds_the_official_sources():
    assert fetching.CORPORA["cifar10"].files[0].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert fetching.CORPORA["cifar100"].files[0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert [r.filename for r in fetching.CORPORA["svhn"].files] == ["train_32x32.mat", "test_32x32.mat"]


def test_crop_and_flip_moves_whole_images_within_four_pixels():
    x = torch.randn(16, 3, 32, 32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    moved = 0
    for i in range(16):
        candidates = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                      if torch.equal(out[i], (lambda c: c.flip(2) if f else c)(padded[i, :, dy:dy + 32, dx:dx + 32]))]
        assert len(candidates) == 1  # exactly one shift and flip explains each output image
        moved += candidates[0] != (4, 4, False)
    assert moved >= 12  # and the batch is not left as it was


def test_augmentation_is_random_per_generator_seed_and_only_for_cifar(tmp_path):
    x = torch.randn(8, 3, 32, 32)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    cifar, svhn = TASKS["cifar10"](), TASKS["svhn"]()
    assert torch.equal(cifar.augment(x, g(1)), cifar.augment(x, g(1)))
    assert not torch.equal(cifar.augment(x, g(1)), cifar.augment(x, g(2)))
    assert not cifar.deterministic and svhn.deterministic
    assert svhn.augment(x, g(1)) is x
    assert TASKS["cifar10"](augment_train=False).deterministic


def test_images_move_as_bytes_and_index_on_any_device(tmp_path):
    images = Images(torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 3, 2, 2), torch.ones(3), torch.full((3,), 2.0))
    moved = images.to("cpu")
    assert moved.data.dtype == torch.uint8 and len(moved) == 2
    batch = moved[torch.tensor([1])]
    assert torch.equal(batch[0, 0], (torch.tensor([[12.0, 13], [14, 15]]) - 1) / 2)


def test_where_the_files_come_from_does_not_change_a_jobs_identity():
    assert TASKS["cifar10"](root="/x", download=True, verify=False).identity() == TASKS["cifar10"]().identity()
    assert TASKS["cifar10"](split_seed=1).identity() != TASKS["cifar10"]().identity()
    assert TASKS["timit"](root="/a", cache="/b").identity() == TASKS["timit"]().identity()
