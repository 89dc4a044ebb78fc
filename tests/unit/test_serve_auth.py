"""Serve API keys: where they come from, what is refused, and what `skr serve` says when they are off."""

import hashlib

import pytest

from skr_ray.serve.app import _key_ok, load_api_keys


def _digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def test_keys_from_an_environment_variable_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SKR_TEST_KEYS", "k1, k2,")
    assert load_api_keys({"api_keys_env": "SKR_TEST_KEYS"}) == sorted([_digest("k1"), _digest("k2")])
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nk3\n\nk1\n")
    both = load_api_keys({"api_keys_env": "SKR_TEST_KEYS", "api_keys_file": str(keys)})
    assert both == sorted({_digest(k) for k in ("k1", "k2", "k3")})  # digests only: no key travels in the app


def test_keys_from_skr_api_keys_when_the_config_names_no_source(monkeypatch):
    monkeypatch.setenv("SKR_API_KEYS", "sk-quick-start")  # the README's quick start: export, then skr serve
    assert load_api_keys({}) == [_digest("sk-quick-start")]
    assert load_api_keys(None) == [_digest("sk-quick-start")]
    assert load_api_keys({"disabled": True}) is None  # an explicit choice wins over the environment


def test_no_keys_is_refused_unless_disabled_explicitly(tmp_path, monkeypatch):
    monkeypatch.delenv("SKR_API_KEYS", raising=False)
    with pytest.raises(ValueError, match="Serve needs API keys"):
        load_api_keys({})
    monkeypatch.setenv("EMPTY_KEYS", " , ")
    with pytest.raises(ValueError, match="Serve needs API keys"):
        load_api_keys({"api_keys_env": "EMPTY_KEYS"})
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE is not set"):
        load_api_keys({"api_keys_env": "NOT_SET_ANYWHERE"})
    with pytest.raises(ValueError, match="does not exist"):
        load_api_keys({"api_keys_file": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="never in the config"):
        load_api_keys({"api_keys": ["sk-live-123"]})
    with pytest.raises(ValueError, match="choose one"):
        load_api_keys({"disabled": True, "api_keys_file": str(tmp_path / "keys")})
    assert load_api_keys({"disabled": True}) is None


def test_bearer_header_check():
    digests = [_digest("good")]
    assert _key_ok("Bearer good", digests)
    assert not _key_ok("Bearer bad", digests) and not _key_ok("good", digests) and not _key_ok(None, digests)
    assert not _key_ok("Bearer ", digests)


def test_skr_serve_refuses_to_start_without_keys(capsys):
    from skr_ray.serve.cli import serve_main

    assert serve_main(None, [], 8000) == 1
    assert "Serve needs API keys" in capsys.readouterr().err


def _png(width, height, mode="L"):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_image_allow_list_and_pixel_cap_from_the_header():
    import io

    from PIL import Image

    from skr_ray.models.vision import decode_image

    assert decode_image(_png(8, 6)).size == (8, 6)
    with pytest.raises(ValueError, match="4000 x 3000 = 12000000 pixels; the limit is 1000000"):
        decode_image(_png(4000, 3000), max_pixels=1_000_000)
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, "GIF")
    with pytest.raises(ValueError, match="could not be decoded as PNG, JPEG, WEBP"):
        decode_image(gif.getvalue())
    with pytest.raises(ValueError, match="decompression bomb"):  # Pillow's own limit, below ours
        decode_image(_png(13000, 13000), max_pixels=10**9)


def test_a_backbone_call_past_the_timeout_is_a_504():
    import asyncio

    from fastapi import HTTPException

    from skr_ray.serve.app import Api

    api = object.__new__(Api.func_or_class)  # the ingress class without a Serve replica around it
    api.request_timeout_s = 0.05

    async def slow():
        await asyncio.sleep(5)

    with pytest.raises(HTTPException) as err:
        asyncio.run(api._bounded(slow(), "embed", "ir-a"))
    assert err.value.status_code == 504 and err.value.detail["code"] == "timeout"
    assert asyncio.run(api._bounded(asyncio.sleep(0, result=[1.0]), "embed", "ir-a")) == [1.0]
