"""Server replies recorded from the real MedFMAdapt server, for the tests that fake a reply.

`fixtures/server_replies.json` holds one real reply per name (what `test_server_replies.py` records from a real
server that trained an adapter). The unit tests build their fake replies with `reply(name, ...)` and `like(...)`,
which start from the recorded reply and refuse to set a key the server does not send, so a fake can never carry a
key of its own: when the server renames a key, `test_server_replies.py` fails, the regenerated fixture no longer
has the old key, and every unit test that still uses it fails with the key's name.

Regenerate after an intended server change:
    MEDFM_RECORD_FIXTURES=1 .venv/bin/python -m pytest Testing/slicer/test_server_replies.py
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "server_replies.json"
RECORD_ENV = "MEDFM_RECORD_FIXTURES"
REGENERATE = f"{RECORD_ENV}=1 .venv/bin/python -m pytest Testing/slicer/test_server_replies.py"


def load_replies() -> dict[str, dict[str, Any]]:
    """Every recorded reply: name -> {"request": "METHOD /path", "reply": the JSON the server sent}."""
    return json.loads(FIXTURE.read_text())["replies"] if FIXTURE.is_file() else {}


def recording() -> bool:
    return os.environ.get(RECORD_ENV, "") not in ("", "0")


def reply(name: str, **changes: Any) -> Any:
    """A copy of the recorded reply `name`, with `changes` to keys the server sends (KeyError for any other key)."""
    replies = load_replies()
    if name not in replies:
        raise KeyError(f"no recorded server reply {name!r} in {FIXTURE.name}; regenerate it with {REGENERATE}")
    recorded = copy.deepcopy(replies[name]["reply"])
    return like(recorded, **changes) if changes else recorded


def like(template: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `template` (a recorded reply or a part of one) with some of its values changed.

    Only keys the template has may change, so a test cannot invent a key the server never sends.
    """
    unknown = sorted(set(changes) - set(template))
    if unknown:
        raise KeyError(
            f"the server's reply has no key {', '.join(map(repr, unknown))} (it has {', '.join(sorted(template))}); "
            f"if the server renamed it, regenerate {FIXTURE.name} with {REGENERATE} and use the new name"
        )
    return {**copy.deepcopy(template), **changes}


# ---- keys and types ------------------------------------------------------------------------------------------------


def reply_shape(value: Any) -> Any:
    """The keys and types of a JSON value, without its values: {"timing": {"total_s": "number"}, ...}.

    A list becomes the sorted distinct shapes of its items; ints and floats are both "number".
    """
    if isinstance(value, dict):
        return {str(k): reply_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        distinct = {json.dumps(reply_shape(v), sort_keys=True) for v in value}
        return [json.loads(s) for s in sorted(distinct)]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where the shape of `actual` differs from that of `expected`, one line each, named by its key path."""
    where = path or "the reply"
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = [f"{path}{'.' if path else ''}{k}: in the fixture, missing from the server's reply"
                 for k in sorted(set(expected) - set(actual))]
        lines += [f"{path}{'.' if path else ''}{k}: sent by the server, missing from the fixture"
                  for k in sorted(set(actual) - set(expected))]
        for k in sorted(set(expected) & set(actual)):
            lines += differences(expected[k], actual[k], f"{path}{'.' if path else ''}{k}")
        return lines
    if isinstance(expected, list) and isinstance(actual, list):
        if expected == actual:
            return []
        if len(expected) == len(actual) == 1:
            return differences(expected[0], actual[0], f"{path}[*]")
        return [f"{where}[*]: items shaped {json.dumps(expected)} in the fixture, {json.dumps(actual)} from the server"]
    if expected != actual:
        return [f"{where}: {_kind(expected)} in the fixture, {_kind(actual)} from the server"]
    return []


def compact(value: Any, keep: int = 3) -> Any:
    """`value` with long lists cut to their first `keep` items plus one of each further item shape (the server's
    log lines in GET /train/), so the fixture stays small and its shape stays exactly the reply's."""
    if isinstance(value, dict):
        return {k: compact(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        kept, seen = [], set()
        for item in value:
            key = json.dumps(reply_shape(item), sort_keys=True)
            if len(kept) < keep or key not in seen:
                kept.append(compact(item, keep))
                seen.add(key)
        return kept
    return value


def _kind(s: Any) -> str:
    return "an object" if isinstance(s, dict) else "a list" if isinstance(s, list) else s


def check_reply(name: str, request: str, value: Any) -> None:
    """Assert the real reply `value` has the recorded reply's keys and types; with MEDFM_RECORD_FIXTURES=1, record it.

    Values (timings, Dice, ids) are not compared: they differ from run to run and machine to machine.
    """
    if recording():
        data = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
        data.setdefault("about", f"Replies of the real MedFMAdapt server, recorded by test_server_replies.py. "
                                 f"Regenerate: {REGENERATE}")
        data.setdefault("replies", {})[name] = {"request": request, "reply": compact(value)}
        data["replies"] = dict(sorted(data["replies"].items()))
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        return
    replies = load_replies()
    assert name in replies, f"{FIXTURE.name} has no recorded reply {name!r} ({request}); record it with {REGENERATE}"
    found = differences(reply_shape(replies[name]["reply"]), reply_shape(value))
    assert not found, (
        f"The server's {request} reply ({name!r}) no longer has the keys and types recorded in "
        f"Testing/slicer/fixtures/{FIXTURE.name}:\n  " + "\n  ".join(found) + "\n"
        f"If the server changed on purpose, regenerate the fixture with\n  {REGENERATE}\n"
        "then update the Slicer library (MedFMAdapt/MedFMAdaptLib) and the unit tests the new fixture breaks."
    )
