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
