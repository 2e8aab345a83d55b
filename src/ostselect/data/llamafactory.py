"""Hand a subset to LLaMA-Factory: a `dataset_info.json` entry that reads it as sharegpt data.

LLaMA-Factory (its data/README.md, "Sharegpt Format", "Multimodal Image Dataset") loads a local
dataset from `<dataset_dir>/<file_name>` (JSON, JSONL or Parquet; not a `datasets.save_to_disk`
folder), reads the conversation from `columns.messages` with `tags` naming the role and content
keys and the role values, and the images from `columns.images`: path strings resolved against
`media_dir` (default: `dataset_dir`, the folder of `dataset_info.json`), bytes, or
`{"bytes", "path"}` dicts. The number of images must equal the `<image>` placeholders of the turns,
and turns must alternate user / assistant after one optional leading system turn, ending with the
assistant; it skips or fails on anything else, so `llamafactory_entry` checks the written records
the same way before a training job does. A `tags` object that leaves a tag out sets it to None
there (not to its default), so the entry names every tag the records use, system included.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ostselect.atomic import temp_beside
from ostselect.data import columnar
from ostselect.data.formats import container_of
from ostselect.data.jsontext import JsonArrayReader, read_jsonl
from ostselect.data.records import record_id
from ostselect.data.sample import IMAGE_PLACEHOLDER

DATASET_INFO = "dataset_info.json"

_CANONICAL = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "system": "system",
}
_DEFAULT_TAGS = {
    "messages": {"user": "user", "assistant": "assistant", "system": "system"},
    "conversations": {"user": "human", "assistant": "gpt", "system": "system"},
}


@dataclass
class HandOff:
    """A `dataset_info.json` entry for a subset, and what in the records LLaMA-Factory would
    refuse or skip: reason -> (records, first such id)."""

    entry: dict[str, Any]
    problems: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add_problem(self, reason: str, rid: str) -> None:
        """Count one more record with `reason`, remembering the first one's id."""
        n, first = self.problems.get(reason, (0, rid))
        self.problems[reason] = (n + 1, first)


def llamafactory_entry(subset_path: str | Path) -> HandOff:
    """The sharegpt entry for the written subset `subset_path`, and the problems its records have.

    Columns and tags come from the records themselves (messages: role/content, user/assistant;
    LLaVA: from/value, human/gpt), so the entry reads them as written.
    """
    subset = Path(subset_path)
    if container_of(subset) == "hf":
        raise ValueError(
            f"LLaMA-Factory reads JSON, JSONL or Parquet files, not the `datasets` folder "
            f"{subset}: export the pool with `Dataset.to_parquet` and select from that"
        )
    entry = _entry(subset)  # two streaming passes (a subset may not fit in memory)
    images_col = entry["columns"].get("images")
    handoff = HandOff(entry)
    image_kinds: set[str] = set()
    for i, record in enumerate(_records(subset)):
        rid = record_id(record, f"{subset.name}#{i}")
        _check_record(record, entry, subset.parent, handoff, rid)
        value = record.get(images_col) if images_col else None
        if value is not None:
            image_kinds.add("list" if isinstance(value, list) else "single")
    if len(image_kinds) > 1 and container_of(subset) != "parquet":
        handoff.add_problem(
            f"`{images_col}` is a list in some records and a single image in others "
            "(`datasets` cannot load one column holding both)",
            "(whole file)",
        )
    return handoff


def _entry(subset: Path) -> dict[str, Any]:
    """The entry that reads the records as written: the most used schema, keys and role names."""
    schemas: Counter[str] = Counter()
    keys: dict[str, Counter[tuple[str, str]]] = {"messages": Counter(), "conversations": Counter()}
    spelled: dict[str, dict[str, Counter[str]]] = {"messages": {}, "conversations": {}}
    image_keys: Counter[str] = Counter()
    has_system = False
    for r in _records(subset):
        col = "messages" if "messages" in r else "conversations"
        schemas[col] += 1
        for t in _turns(r, col):
            role_key = _key(t, "from", "role", col)
            keys[col][(role_key, _key(t, "value", "content", col))] += 1
            raw = t.get(role_key)
            if isinstance(raw, str) and raw.strip().lower() in _CANONICAL:
                role = _CANONICAL[raw.strip().lower()]
                spelled[col].setdefault(role, Counter())[raw] += 1
        image_keys.update(filter(None, [_images_key(r, col)]))
        has_system = has_system or isinstance(r.get("system"), str)
    messages_col = schemas.most_common(1)[0][0] if schemas else "messages"
    default_keys = ("role", "content") if messages_col == "messages" else ("from", "value")
    role_tag, content_tag = (
        keys[messages_col].most_common(1)[0][0] if keys[messages_col] else default_keys
    )
    tags = {
        role: spelled[messages_col][role].most_common(1)[0][0]
        if role in spelled[messages_col]
        else default
        for role, default in _DEFAULT_TAGS[messages_col].items()
    }
    columns = {"messages": messages_col}
    if image_keys:
        columns["images"] = image_keys.most_common(1)[0][0]
    if has_system:
        columns["system"] = "system"
    return {
        "file_name": subset.name,
        "formatting": "sharegpt",
        "columns": columns,
        "tags": {
            "role_tag": role_tag,
            "content_tag": content_tag,
            "user_tag": tags["user"],
            "assistant_tag": tags["assistant"],
            "system_tag": tags["system"],
        },
    }


def _check_record(
    record: dict[str, Any], entry: dict[str, Any], dataset_dir: Path, handoff: HandOff, rid: str
) -> None:
    """Read `record` as LLaMA-Factory's sharegpt converter and image plugin would."""
    columns, tags = entry["columns"], entry["tags"]
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    messages = record.get(columns["messages"])
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        other = "conversations" if columns["messages"] == "messages" else "messages"
        handoff.add_problem(f"no `{columns['messages']}` list (uses `{other}`?)", rid)
        return
    if messages and messages[0].get(role_tag) == tags["system_tag"]:
        messages = messages[1:]
    expected = (tags["user_tag"], tags["assistant_tag"])
    if any(m.get(role_tag) != expected[i % 2] for i, m in enumerate(messages)):
        handoff.add_problem(
            f"turns are not {expected[0]}/{expected[1]} alternating (after one optional "
            f"{tags['system_tag']} turn) under `{role_tag}`: LLaMA-Factory skips the record",
            rid,
        )
        return
    if len(messages) % 2:
        handoff.add_problem("last turn is not the assistant's: LLaMA-Factory skips the record", rid)
        return
    contents = [m.get(content_tag) for m in messages]
    if not all(isinstance(c, str) for c in contents):
        handoff.add_problem(
            "content given as a list of typed parts: LLaMA-Factory reads text with <image> "
            "placeholders and a separate images list",
            rid,
        )
        return
    images = _as_list(record.get(columns["images"])) if "images" in columns else []
    placeholders = sum(c.count(IMAGE_PLACEHOLDER) for c in contents)
    if placeholders != len(images):
        handoff.add_problem(
            "number of <image> placeholders differs from the number of images "
            "(LLaMA-Factory raises on it)",
            rid,
        )
    for image in images:
        reason = _image_problem(image, dataset_dir)
        if reason:
            handoff.add_problem(reason, rid)


def _image_problem(image: Any, dataset_dir: Path) -> str | None:
    """Why LLaMA-Factory (media_dir = dataset_dir) could not open `image`, or None."""
    if isinstance(image, (bytes, bytearray)):
        return None
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            return None
        path = image.get("path")
        if isinstance(path, str) and os.path.isabs(path) and os.path.isfile(path):
            return None
        return (
            '{"bytes": null, "path": ...} image whose path is relative or missing: LLaMA-Factory '
            "opens it from the training job's working directory"
        )
    if not isinstance(image, str):
        return f"image entry is a {type(image).__name__}, not a path"
    if image.startswith(("data:", "http://", "https://")):
        return "image given as a URL: LLaMA-Factory opens file paths"
    if os.path.isfile(os.path.join(dataset_dir, image)):
        return None
    return (
        f"image path not found from {dataset_dir} (LLaMA-Factory's media_dir): write the "
        "subset with --copy-images or --link-images, or set media_dir to the pool's folder"
    )


def write_dataset_info(folder: str | Path, name: str, entry: dict[str, Any]) -> tuple[Path, str]:
    """Add `name: entry` to `folder/dataset_info.json`, keeping every other entry.

    An entry of the same name that reads another file is kept too: the new one is then named
    `<name>_<file stem>`. Returns the file and the name used.
    """
    path = Path(folder) / DATASET_INFO
    info = read_dataset_info(folder)
    name = name.replace(",", "_").strip() or "subset"  # LLaMA-Factory splits `dataset:` on commas
    old = info.get(name)
    if isinstance(old, dict) and old.get("file_name") not in (None, entry["file_name"]):
        name = f"{name}_{Path(entry['file_name']).stem}"
    info[name] = entry
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path, name


def read_dataset_info(folder: str | Path) -> dict[str, Any]:
    """The entries of `folder/dataset_info.json` ({} when there is none); ValueError if unusable."""
    path = Path(folder) / DATASET_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): fix or remove it") from None
    if not isinstance(info, dict):
        kind = {list: "array", str: "string"}.get(type(info), type(info).__name__)
        raise ValueError(f"{path} holds a JSON {kind}, not an object of dataset entries")
    return info


def _records(path: Path) -> Iterator[dict[str, Any]]:
    container = container_of(path)
    if container == "parquet":
        rows: Iterator[Any] = (row for _, row in columnar.iter_parquet_rows(path))
    else:
        reader = read_jsonl(path) if container == "jsonl" else JsonArrayReader(path)
        rows = (rec.value for rec in reader if rec.problem is None)
    yield from (r for r in rows if isinstance(r, dict))


def _turns(record: dict[str, Any], column: str) -> list[dict[str, Any]]:
    turns = record.get(column)
    return [t for t in turns if isinstance(t, dict)] if isinstance(turns, list) else []


def _key(turn: dict[str, Any], llava: str, messages: str, column: str) -> str:
    """The key a turn uses: LLaVA turns may use the messages key instead (as our reader allows)."""
    if column == "messages":
        return messages
    return llava if llava in turn else messages


def _images_key(record: dict[str, Any], column: str) -> str | None:
    if record.get("images") is not None:
        return "images"
    if column == "conversations" and record.get("image") is not None:
        return "image"
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
