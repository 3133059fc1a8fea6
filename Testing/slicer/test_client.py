"""The client's own mechanics, with no server: multipart parsing, file-name sanitising, headers, timeouts.

The multipart body is produced by requests_toolbelt's MultipartEncoder, the very encoder MONAI Label's
/infer endpoint uses for its reply, so the parser is checked against the real wire format.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from requests_toolbelt import MultipartEncoder

from MedFMAdapt.MedFMAdaptLib.client import MedFMClient, _detail_of, _filename_from_disposition
from MedFMAdapt.MedFMAdaptLib.errors import ConnectionFailed, ServerTimeout
from MedFMAdapt.MedFMAdaptLib.multipart import encode_form, parse_multipart, sanitize_filename
from Testing.slicer.replies import reply

EVERY_BYTE = bytes(range(256)) * 8 + b"\r\n--\r\n\r\n\n\r"


def test_parses_monai_label_infer_reply_byte_exact():
    params = reply("infer_interactive")  # the params part exactly as the real server sent it
    encoder = MultipartEncoder(
        fields={
            "params": (None, json.dumps(params), "application/json"),
            "image": ("label_breast1.nii.gz", EVERY_BYTE, "application/gzip"),
        }
    )
    parts = {p.name: p for p in parse_multipart(encoder.to_string(), encoder.content_type)}
    assert json.loads(parts["params"].data) == params
    assert parts["params"].filename is None
    assert parts["image"].data == EVERY_BYTE
    assert parts["image"].filename == "label_breast1.nii.gz"


def test_multipart_reply_with_hostile_file_name_is_sanitised():
    encoder = MultipartEncoder(fields={"image": ("../../etc/passwd", b"x", "application/octet-stream")})
    (part,) = parse_multipart(encoder.to_string(), encoder.content_type)
    assert part.filename == "passwd"


def test_non_multipart_body_is_refused():
    with pytest.raises(ValueError, match="multipart"):
        parse_multipart(b"{}", "application/json")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\system32\\cmd.exe", "cmd.exe"),
        ("C:evil.nii.gz", "evil.nii.gz"),
        ("/abs/path/label.nii.gz", "label.nii.gz"),
        ("..", "download.bin"),
        ("", "download.bin"),
        (None, "download.bin"),
        (".hidden", "hidden"),
        ("name with spaces;rm -rf.nii.gz", "name_with_spaces_rm_-rf.nii.gz"),
    ],
)
def test_sanitize_filename(given, expected):
    assert sanitize_filename(given) == expected


def test_downloaded_file_names_from_content_disposition_are_sanitised(tmp_path):
    name = _filename_from_disposition('attachment; filename="../../../home/user/.bashrc"')
    client = MedFMClient("http://127.0.0.1:1", download_dir=tmp_path)
    saved = client._save(name, b"data", "fallback.bin")
    assert saved.parent == tmp_path and saved.name == "bashrc"
    assert _filename_from_disposition("attachment; filename*=utf-8''l%C3%A9sion.nii.gz") == "lésion.nii.gz"


def test_request_encoding_round_trips_through_our_parser(tmp_path):
    upload = tmp_path / "my volume.nii.gz"
    upload.write_bytes(EVERY_BYTE)
    body, content_type = encode_form({"params": '{"a": 1}'}, {"file": upload})
    parts = {p.name: p for p in parse_multipart(body, content_type)}
    assert parts["file"].data == EVERY_BYTE and parts["file"].filename == "my_volume.nii.gz"
    assert parts["params"].data == b'{"a": 1}'


def test_token_header_only_when_set():
    with_token = MedFMClient("http://127.0.0.1:8000", token="s3cret").build_request("GET", "/info/")
    assert with_token.get_header("Authorization") == "Bearer s3cret"
    without = MedFMClient("http://127.0.0.1:8000").build_request("GET", "/info/")
    assert without.get_header("Authorization") is None


def test_base_url_normalised_and_validated():
    assert MedFMClient("127.0.0.1:8000/").base_url == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="http"):
        MedFMClient("ftp://host")
    with pytest.raises(ValueError, match="address"):
        MedFMClient("  ")


def test_tls_verified_unless_turned_off():
    import ssl

    assert MedFMClient("https://h")._ssl_context().verify_mode == ssl.CERT_REQUIRED
    relaxed = MedFMClient("https://h", verify_tls=False)._ssl_context()
    assert relaxed.verify_mode == ssl.CERT_NONE and not relaxed.check_hostname
    assert MedFMClient("http://h")._ssl_context() is None


def test_silent_server_times_out_within_the_limit():
    """A socket that accepts but never answers: the call gives up after `timeout`, not never."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = MedFMClient(f"http://127.0.0.1:{port}", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(ServerTimeout) as caught:
            client.info()
        assert time.monotonic() - start < 5
        assert caught.value.timeout == 0.5


def test_closed_port_is_connection_failed():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionFailed) as caught:
        MedFMClient(f"http://127.0.0.1:{port}", timeout=2).info()
    assert "refused" in str(caught.value).lower()


def test_error_detail_extraction():
    assert _detail_of(b'{"detail": "roi is outside the image"}') == "roi is outside the image"
    assert _detail_of(b'{"detail": [{"loc": ["query", "image"], "msg": "field required"}]}') == "field required"
    assert _detail_of(b"Internal Server Error") == "Internal Server Error"
    assert _detail_of(b"") == "no explanation given"


@pytest.mark.parametrize(
    "url",
    [
        "http://elsewhere.example:8000/medfm/results/uncertainty-0.nii.gz",
        "/datastore/image?image=breast1",
        "/medfm/results/../adapters",
    ],
)
def test_result_urls_outside_the_servers_results_are_not_fetched(url, tmp_path):
    from MedFMAdapt.MedFMAdaptLib.errors import BadResponse

    client = MedFMClient("http://127.0.0.1:9", download_dir=tmp_path)  # port 9: nothing would answer anyway
    with pytest.raises(BadResponse, match="not fetched"):
        client.download_result(url)
