"""Property tests: whatever bytes or JSON arrive, the readers never crash, and every record comes
back either as a sample or as a reject with a known code and a reason."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostselect.data import REJECT_CODES, PoolError, Reject, Sample, iter_samples, read_pool

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
roles = st.sampled_from(["user", "assistant", "system", "human", "gpt", "tool", "", 3, None])
parts = st.one_of(
    st.text(max_size=12),
    st.fixed_dictionaries({"type": st.just("text"), "text": json_scalars}),
    st.fixed_dictionaries({"type": st.just("image")}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": json_values}),
    json_values,
)
contents = st.one_of(
    st.lists(st.sampled_from(["<image>", "a", " ", "\n", "é"]), max_size=6).map("".join),
    st.lists(parts, max_size=3),
    json_values,
)
turns = st.fixed_dictionaries({"role": roles, "content": contents})
llava_turns = st.fixed_dictionaries({"from": roles, "value": contents})
images = st.one_of(st.lists(st.text(max_size=6) | json_values, max_size=3), json_values)
conversation_records = st.one_of(
    st.fixed_dictionaries(
        {"messages": st.lists(turns, max_size=4) | json_values},
        optional={"id": json_values, "images": images, "system": json_values, "x": json_values},
    ),
    st.fixed_dictionaries(
        {"conversations": st.lists(llava_turns, max_size=4) | json_values},
        optional={"id": json_values, "image": images, "images": images},
    ),
    json_values,
)


def _check_items(items: list[Sample | Reject]) -> None:
    for item in items:
        assert isinstance(item, (Sample, Reject))
        if isinstance(item, Reject):
            assert item.code in REJECT_CODES and item.reason.strip()
        else:
            assert isinstance(item.id, str) and item.turns


def _write(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ost-prop-"))
    path = folder / name
    path.write_bytes(data)
    return path


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_readers(data):
    for name in ("pool.jsonl", "pool.json", "pool.parquet"):
        path = _write(data, name)
        try:
            items = list(read_pool(path))
        except PoolError as e:  # a whole-file refusal is allowed, with a message
            assert str(e)
            continue
        _check_items(items)
        list(iter_samples(path, decode_images=True))


@SETTINGS
@given(st.lists(conversation_records, max_size=6))
def test_every_jsonl_line_is_parsed_or_rejected(records):
    lines = [json.dumps(r) for r in records]
    path = _write("".join(line + "\n" for line in lines).encode(), "pool.jsonl")
    items = list(read_pool(path))
    _check_items(items)
    assert len(items) == len(lines)  # exactly one outcome per record
    list(iter_samples(path, decode_images=True))


@SETTINGS
@given(st.lists(conversation_records, max_size=6), st.sampled_from([None, 1, 2]))
def test_every_json_array_element_is_parsed_or_rejected(records, indent):
    path = _write(json.dumps(records, indent=indent).encode(), "pool.json")
    items = list(read_pool(path))
    _check_items(items)
    assert len(items) == len(records)
    # Samples carry their exact element text: it parses back to the original record.
    for item in items:
        if isinstance(item, Sample):
            assert item.source is not None and item.source.index is not None
            assert json.loads(item.raw) == records[item.source.index]
