"""The datastore guards (lib/route_guards.py) drop the info keys the server sets, so a client cannot forge when or
by whom a label was saved; what is its own passes on."""

from __future__ import annotations

from lib.route_guards import SERVER_KEYS, client_fields


def test_server_keys_are_dropped_and_the_rest_kept():
    sent = {"ts": 9_999_999_999, "user": "someone", "name": "x.nii.gz", "checksum": "0", "session": "s1",
            "annotation_seconds": 12.5}
    assert client_fields(sent) == {"session": "s1", "annotation_seconds": 12.5}
    assert client_fields(sent, keep=("user",)) == {"user": "someone", "session": "s1", "annotation_seconds": 12.5}
    assert set(SERVER_KEYS) == {"ts", "user", "name", "checksum"}
