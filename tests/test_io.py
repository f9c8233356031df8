"""Saving and loading layers (zoo/io.py): atomic, validated, no code execution."""

from __future__ import annotations

import pytest
import torch

import zoo


@pytest.fixture
def layer(cross_registry):
    return zoo.create("cross", query_dim=16, context_dim=8, heads=2, dim_head=4, bias=True).eval()


def test_round_trip(layer, tmp_path):
    path = zoo.save(layer, tmp_path / "layer.pt")
    again = zoo.load(path)
    assert again.config == layer.config
    x, c = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    torch.testing.assert_close(again(x, c), layer(x, c))


def test_truncated_file_is_a_clear_error(layer, tmp_path):
    path = zoo.save(layer, tmp_path / "layer.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="layer.pt: not a readable zoo layer file"):
        zoo.load(path)


def test_tampered_weights_fail_checksum(layer, tmp_path):
    path = zoo.save(layer, tmp_path / "layer.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["to_q.weight"] += 1.0
    torch.save(payload, path)
    with pytest.raises(ValueError, match="checksum"):
        zoo.load(path)


class Evil:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['ZOO_PWNED'], 'w').write('x')",))


def test_malicious_pickle_is_refused_without_running(layer, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ZOO_PWNED", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": "attention-zoo/layer/1", "config": "{}", "state_dict": Evil()}, path)
    with pytest.raises(ValueError, match="refused for safety"):
        zoo.load(path)
    assert not marker.exists()
    # the control: an unrestricted load of the same file does run the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_foreign_and_missing_files(layer, tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected a file written by zoo.save"):
        zoo.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        zoo.load(tmp_path / "nothing.pt")


def test_failed_save_keeps_the_existing_file(layer, tmp_path, monkeypatch):
    path = zoo.save(layer, tmp_path / "layer.pt")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        zoo.save(layer, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["layer.pt"]  # no temp file left behind


def test_save_needs_a_zoo_layer(tmp_path):
    with pytest.raises(ValueError, match="built by zoo.create"):
        zoo.save(torch.nn.Linear(2, 2), tmp_path / "x.pt")


# -- issue 16: every field validated, the config under the checksum, bounded messages ----


def _rewrite(path, change):
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def _set_config(**fields):
    import json

    def change(payload):
        payload["config"] = json.dumps({**json.loads(payload["config"]), **fields})

    return change


@pytest.mark.parametrize("fields", [{"heads": 4, "dim_head": 2}, {"dropout": 0.5}, {"bias": True}])
def test_edited_config_fails_the_checksum(layer, tmp_path, fields):
    path = _rewrite(zoo.save(layer, tmp_path / "layer.pt"), _set_config(**fields))
    with pytest.raises(ValueError, match=r"layer\.pt: the config and weights do not match their checksum"):
        zoo.load(path)


def _resign(payload):
    from zoo.io import _digest

    payload["sha256"] = _digest(payload["state_dict"], payload["config"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.update(config="{not json"), "field 'config' is not valid JSON"),
        (lambda p: p.update(config="[1, 2]"), "field 'config' must be a JSON object"),
        (lambda p: p.pop("config"), "field 'config' must be JSON text"),
        (lambda p: p.update(config=7), "field 'config' must be JSON text"),
        (lambda p: p.pop("state_dict"), "field 'state_dict' must be a mapping"),
        (lambda p: p["state_dict"].update({"extra": "text"}), "field 'state_dict' must map names to dense tensors"),
        (lambda p: p.update(format=["x"] * 3), "expected a file written by zoo.save"),
        (lambda p: (_set_config(query_dim=8)(p), _resign(p)), "do not fit the config"),
        (lambda p: (_set_config(heads="2")(p), _resign(p)), "field 'config' does not validate"),
        (lambda p: (p.update(config='{"variant": "crosss"}'), _resign(p)), "unknown attention variant 'crosss'"),
        (lambda p: (p.update(config="[" * 3000 + "]" * 3000), _resign(p)), "field 'config'"),
    ],
)
def test_every_field_is_validated_and_named(layer, tmp_path, change, message):
    path = _rewrite(zoo.save(layer, tmp_path / "layer.pt"), change)
    with pytest.raises(ValueError, match=message) as info:
        zoo.load(path)
    assert str(path) in str(info.value) and len(str(info.value)) < 1500


def test_empty_file_and_directory_are_clear_errors(layer, tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt: the file is empty"):
        zoo.load(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="not a file"):
        zoo.load(tmp_path)


def test_map_location_meta_and_bogus_are_refused(layer, tmp_path):
    path = zoo.save(layer, tmp_path / "layer.pt")
    with pytest.raises(ValueError, match=r"layer\.pt: map_location='meta' would load no data"):
        zoo.load(path, map_location="meta")
    with pytest.raises(ValueError, match=r"layer\.pt: map_location 'bogus' is not a device"):
        zoo.load(path, map_location="bogus")
    assert zoo.load(path, map_location=torch.device("cpu")).config == layer.config


def test_nested_shared_list_gives_a_short_message(layer, tmp_path):
    """A 1.4 KB file whose lists share their items has an astronomically long repr."""
    nested = []
    for _ in range(40):
        nested = [nested, nested]
    path = _rewrite(zoo.save(layer, tmp_path / "layer.pt"), lambda p: p.update(format=nested))
    with pytest.raises(ValueError, match="expected a file written by zoo.save") as info:
        zoo.load(path)
    assert len(str(info.value)) < 400


def test_save_to_a_directory_names_it_not_a_temp_file(layer, tmp_path):
    with pytest.raises(ValueError, match="is a directory") as info:
        zoo.save(layer, tmp_path)
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_older_format_still_loads_with_a_warning(layer, tmp_path):
    from zoo.io import _digest

    def to_v1(payload):
        payload["format"] = "attention-zoo/layer/1"
        payload["sha256"] = _digest(payload["state_dict"], None)

    path = _rewrite(zoo.save(layer, tmp_path / "layer.pt"), to_v1)
    with pytest.warns(UserWarning, match="save it again"):
        assert zoo.load(path).config == layer.config


def test_concurrent_saves_leave_one_complete_file(cross_registry, tmp_path):
    """Writers racing on one path: the file is always one whole version, no temp file stays."""
    import threading

    path = tmp_path / "layer.pt"
    layers = [zoo.create("cross", query_dim=16, heads=2, dim_head=4 * (1 + i % 2)) for i in range(4)]
    errors = []

    def save_many(layer):
        try:
            for _ in range(15):
                zoo.save(layer, path)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save_many, args=(m,)) for m in layers]
    for t in threads:
        t.start()
    for _ in range(30):  # read while they write: never a partial file
        if path.exists():
            assert zoo.load(path).config.dim_head in (4, 8)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert [p.name for p in tmp_path.iterdir()] == ["layer.pt"]
    assert zoo.load(path).config.dim_head in (4, 8)


def test_save_refuses_weights_that_no_longer_fit_the_config(layer, tmp_path):
    layer.to_q = torch.nn.Linear(16, 4, bias=True)  # swapped after zoo.create
    with pytest.raises(ValueError, match="do not match its config"):
        zoo.save(layer, tmp_path / "layer.pt")


# -- work bounded by what the file declares, before anything large is allocated -------------


def test_an_expanded_tensor_is_refused_before_it_is_materialised(layer, tmp_path):
    """torch.zeros(1).expand(2**29) pickles to a few bytes and would be 2 GiB once copied."""
    def plant(p):
        p["state_dict"]["to_q.weight"] = torch.zeros(1).expand(2**29)

    path = _rewrite(zoo.save(layer, tmp_path / "layer.pt"), plant)
    with pytest.raises(ValueError, match=r"to_q\.weight.*expanded or overlapping"):
        zoo.load(path)


def test_a_compressed_archive_is_refused_before_it_is_inflated(layer, tmp_path):
    import zipfile

    path = zoo.save(layer, tmp_path / "layer.pt")
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert torch.load(packed, weights_only=True)["config"]  # torch itself would read (and inflate) it
    with pytest.raises(ValueError, match="packed.pt: not a file written by zoo.save: .* is compressed"):
        zoo.load(packed)


def test_a_config_asking_for_huge_widths_is_refused_before_the_layer_is_built(layer, tmp_path, monkeypatch):
    """The weights are compared with the layer the config describes on the meta device: a
    checksummed config asking for 2**20-wide projections never allocates them."""
    import zoo.config

    built = []
    real_create = zoo.config.create

    def spy(*args, **kwargs):
        module = real_create(*args, **kwargs)
        built.append(next(module.parameters()).device.type)
        return module

    path = _rewrite(zoo.save(layer, tmp_path / "layer.pt"),
                    lambda p: (_set_config(query_dim=2**20, dim_head=2**20)(p), _resign(p)))
    monkeypatch.setattr(zoo.config, "create", spy)
    with pytest.raises(ValueError, match=r"layer\.pt: the weights .* do not fit the config"):
        zoo.load(path)
    assert built == ["meta"], built  # only the meta twin, never the real layer


def test_save_refuses_a_replaced_submodule_of_the_same_shape(layer, tmp_path):
    """Parameters alone do not decide the function: a dropout swapped for a sigmoid would
    save and load as another layer."""
    layer.to_out[1] = torch.nn.Sigmoid()
    with pytest.raises(ValueError, match=r"submodules .*to_out\.1.*Sigmoid.*Dropout"):
        zoo.save(layer, tmp_path / "layer.pt")


def test_saved_files_follow_the_umask(layer, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = zoo.save(layer, tmp_path / "layer.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
