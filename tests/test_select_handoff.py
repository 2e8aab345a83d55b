"""`ost select` hand-off: self-contained subsets (--copy-images / --link-images), LLaMA-Factory's
dataset_info.json (--llamafactory), and the warning when no limit bounds the subset.

A subset is only self-contained if it still validates after the pool and its images are gone and
from another working directory, so the tests move it and delete the pool before validating.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import png_bytes, write_pool_file
from ostselect.cli import app
from ostselect.data import iter_samples, pool_fingerprint
from ostselect.data.subset_images import SubsetImages, rewrite_json_text
from ostselect.scores import build_scores_table, write_scores

IMG = "@IMG@"  # where a record template's image path goes
IN_A = "images/a.png"


def flat(res: Any) -> str:
    """The output with Rich's wrapping undone."""
    return " ".join(res.output.split())


def make_images(tmp_path: Path) -> dict[str, Path]:
    """Images inside the pool folder (two with the same file name) and outside it."""
    files = {
        "in_a": tmp_path / "pool" / "images" / "a.png",
        "in_sub_a": tmp_path / "pool" / "images" / "sub" / "a.png",
        "out_a": tmp_path / "elsewhere" / "a.png",
    }
    for i, path in enumerate(files.values()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(color=(40 * i, 200, 7)))
    return files


def conversation(i: int, n_images: int) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": "<image>" * n_images + f"question {i}"},
        {"role": "assistant", "content": f"answer {i}"},
    ]


def image_records(files: dict[str, Path]) -> list[dict[str, Any]]:
    """Messages records: pool-relative, same-name, absolute and climbing paths, and text only."""
    return [
        {"id": "m0", "messages": conversation(0, 1), "images": [IN_A]},
        {"id": "m1", "messages": conversation(1, 1), "images": ["images/sub/a.png"]},
        {"id": "m2", "messages": conversation(2, 1), "images": [str(files["out_a"])]},
        {"id": "m3", "messages": conversation(3, 2), "images": ["../elsewhere/a.png", IN_A]},
        {"id": "m4", "messages": conversation(4, 0)},
        {"id": "m5", "messages": conversation(5, 1), "images": [IN_A]},
    ]  # fmt: skip


def scores_for(tmp_path: Path, pool: Path, ids: list[str]) -> Path:
    """Utilities falling with the pool order, so --top N keeps the first N records."""
    table = build_scores_table(ids, [1.0 - 0.1 * i for i in range(len(ids))], "exact")
    fp = pool_fingerprint(pool)
    return write_scores(
        table,
        tmp_path / "scores.parquet",
        {"pool_fingerprint": fp, "scorer": "test", "cost": {"wall_s": 0.0}},
    )


def run_select(pool: Path, scores: Path, out: Path, *extra: str) -> Any:
    args = ["select", "--pool", str(pool), "--scores", str(scores), "--out", str(out), *extra]
    return CliRunner().invoke(app, args)


def validate_elsewhere(subset: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """`ost validate` the subset from another working directory; its JSON summary."""
    cwd.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    res = CliRunner().invoke(app, ["validate", str(subset), "--out", "v", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet"])
def test_copied_subset_validates_after_the_pool_is_gone(tmp_path, monkeypatch, kind):
    files = make_images(tmp_path)
    records = image_records(files)
    suffix = {"jsonl": ".jsonl", "json": ".json", "parquet": ".parquet"}[kind]
    pool = write_pool_file(records, tmp_path / "pool" / f"pool{suffix}", kind)
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    out = tmp_path / "runs" / "top5"
    res = run_select(pool, scores, out, "--top", "5", "--copy-images")
    assert res.exit_code == 0, res.output
    assert "3 copied into" in flat(res)  # a.png, sub/a.png, one hash name for both outside paths
    # Self-contained: move the subset, delete the pool and every original image.
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    shutil.rmtree(tmp_path / "pool")
    shutil.rmtree(tmp_path / "elsewhere")
    summary = validate_elsewhere(moved / pool.name, tmp_path / "cwd", monkeypatch)
    assert (summary["valid"], summary["rejected"]) == (5, {})
    assert not any(p.is_symlink() for p in (moved / "images").rglob("*"))
    if kind == "parquet":
        rows = pq.read_table(moved / pool.name).to_pylist()
    else:
        rows = [s.raw for s in iter_samples(moved / pool.name)]
        rows = [json.loads(r) for r in rows]
    hashed = rows[2]["images"][0]
    assert [r["images"] for r in rows if r.get("images")] == [
        ["images/images/a.png"],
        ["images/images/sub/a.png"],
        [hashed],
        [hashed, "images/images/a.png"],
    ]
    assert hashed.startswith("images/") and hashed.endswith(".png") and "/a.png" not in hashed
    # Nothing but the image paths changed.
    for new, old in zip(rows, records[:5], strict=True):
        assert {k: v for k, v in new.items() if k != "images"} == {
            k: v for k, v in old.items() if k != "images"
        }


def test_rewritten_jsonl_line_differs_only_in_its_image_fields(tmp_path, monkeypatch):
    make_images(tmp_path)
    line = (
        '{"id":"t0",  "images":[' + IMG + '], "note": "images/a.png",'
        '"messages":[{"role":"user","content":[{"type":"image","image":' + IMG + "},"
        '{"type":"text","text":"<image> what \\u00e9 is \\"images/a.png\\"?"}]},'
        '{"role":"assistant","content":"red"}], "alt": {"path": "images/a.png"}}\r'
    )
    embedded = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    data_line = (
        '{"id": "t1", "messages": [{"role": "user", "content": "<image>q"}, '
        '{"role": "assistant", "content": "a"}], "images": ["' + embedded + '"]}'
    )
    pool = tmp_path / "pool" / "pool.jsonl"
    pool.write_text(
        line.replace(IMG, '"images/a.png"', 1).replace(IMG, '"images/sub/a.png"')
        + "\n"
        + data_line
        + "\n",
        encoding="utf-8",
    )
    scores = scores_for(tmp_path, pool, ["t0", "t1"])
    out = tmp_path / "out"
    res = run_select(pool, scores, out, "--top", "2", "--link-images")
    assert res.exit_code == 0, res.output
    subset = (out / "pool.jsonl").read_bytes().decode("utf-8").split("\n")
    expected = line.replace(IMG, '"images/images/a.png"', 1).replace(
        IMG, '"images/images/sub/a.png"'
    )
    assert subset == [expected, data_line, ""]  # text, spacing, escapes, \r, bytes all kept
    summary = validate_elsewhere(out / "pool.jsonl", tmp_path / "cwd", monkeypatch)
    assert (summary["valid"], summary["rejected"]) == (2, {})


def test_linked_subset_links_the_pool_images_and_falls_back_to_copies(tmp_path, monkeypatch):
    files = make_images(tmp_path)
    records = image_records(files)
    pool = write_pool_file(records, tmp_path / "pool" / "pool.jsonl", "jsonl")
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    out = tmp_path / "linked"
    res = run_select(pool, scores, out, "--top", "2", "--link-images")
    assert res.exit_code == 0, res.output
    link = out / "images" / "images" / "a.png"
    assert link.is_symlink() and Path(os.readlink(link)) == files["in_a"]
    assert "2 linked into" in flat(res)
    summary = validate_elsewhere(out / "pool.jsonl", tmp_path / "cwd", monkeypatch)
    assert (summary["valid"], summary["rejected"]) == (2, {})

    def no_symlinks(*_args: object, **_kwargs: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    res = run_select(pool, scores, tmp_path / "nolinks", "--top", "2", "--link-images")
    assert res.exit_code == 0, res.output
    assert "symlinks are not possible here (Operation not permitted)" in flat(res)
    copied = tmp_path / "nolinks" / "images" / "images" / "a.png"
    assert not copied.is_symlink() and copied.read_bytes() == files["in_a"].read_bytes()
    # Copying over an earlier link replaces the link: it never writes through it.
    res = run_select(pool, scores, out, "--top", "2", "--copy-images")
    assert res.exit_code == 0, res.output
    assert not link.is_symlink() and files["in_a"].read_bytes() == link.read_bytes()


def test_image_names_never_collide(tmp_path):
    pool_dir = tmp_path / "pool"
    sources = {
        "images/a.png": (1, 1, 1),
        "images/sub/a.png": (2, 2, 2),
        "images/A.png": (3, 3, 3),  # same name as images/a.png on a case-insensitive disk
        "../elsewhere/a.png": (4, 4, 4),
        "../other/a.png": (5, 5, 5),  # same file name outside, other content
        "../other/same_as_elsewhere.png": (4, 4, 4),  # same content: may share a file
    }
    for rel, color in sources.items():
        path = pool_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(color=color))
    placer = SubsetImages("copy", pool_dir, tmp_path / "sub")
    placed = {rel: placer.place(rel) for rel in sources}
    placed["abs"] = placer.place(str((pool_dir / "../elsewhere/a.png").resolve()))
    assert placed["abs"] == placed["../elsewhere/a.png"]
    assert placed["images/a.png"] == "images/images/a.png"
    assert placed["images/sub/a.png"] == "images/images/sub/a.png"
    by_content: dict[bytes, set[str]] = {}
    for rel, new in placed.items():
        assert new is not None
        src = pool_dir / (rel if rel != "abs" else "../elsewhere/a.png")
        assert (tmp_path / "sub" / new).read_bytes() == src.read_bytes()
        by_content.setdefault(src.read_bytes(), set()).add(new.casefold())
    names = [n for group in by_content.values() for n in group]
    assert len(names) == len(set(names)) == 5  # one name per content, even ignoring case
    assert placer.place("images/missing.png") is None and placer.counts.missing


def test_two_pools_in_one_folder_keep_their_own_images(tmp_path, monkeypatch):
    """Same relative path, other bytes: the second subset must not overwrite the first's image."""
    out = tmp_path / "shared"
    subsets = []
    for name, color in (("p1", (9, 9, 9)), ("p2", (250, 1, 1))):
        image = tmp_path / name / "images" / "a.png"
        image.parent.mkdir(parents=True)
        image.write_bytes(png_bytes(color=color))
        rec = {"id": f"{name}-0", "messages": conversation(0, 1), "images": [IN_A]}
        pool = write_pool_file([rec], tmp_path / name / f"{name}.jsonl", "jsonl")
        scores = scores_for(tmp_path, pool, [rec["id"]])
        res = run_select(pool, scores, out, "--top", "1", "--copy-images")
        assert res.exit_code == 0, res.output
        subsets.append((out / pool.name, image.read_bytes()))
    for subset, original in subsets:
        (sample,) = iter_samples(subset)
        assert sample.images[0].read_bytes() == original
    assert sorted(p.name for p in (out / "images" / "images").iterdir()) == ["a.png", "a~1.png"]
    # Running the first selection again reuses its own file (same bytes): nothing new appears.
    scores = scores_for(tmp_path, tmp_path / "p1" / "p1.jsonl", ["p1-0"])
    res = run_select(tmp_path / "p1" / "p1.jsonl", scores, out, "--top", "1", "--copy-images")
    assert res.exit_code == 0, res.output
    assert len(list((out / "images" / "images").iterdir())) == 2
    assert json.loads((out / "p1.jsonl").read_text())["images"] == ["images/images/a.png"]


def test_rewrite_json_text_touches_only_the_given_strings():
    text = '{"a" : ["x", {"p":"x"}], "b":"x" , "c":[1,2.5e3,true,null,"x"]}'
    out = rewrite_json_text(text, {("a", 1, "p"): "y/é", ("c", 4): "z"})
    assert out == '{"a" : ["x", {"p":"y/é"}], "b":"x" , "c":[1,2.5e3,true,null,"z"]}'


def test_embedded_images_need_nothing(tmp_path):
    rows = [
        {
            "id": f"e{i}",
            "messages": conversation(i, 1),
            "images": [{"bytes": png_bytes(color=(i, 0, 0)), "path": None}],
        }
        for i in range(3)
    ]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pool)
    scores = scores_for(tmp_path, pool, [r["id"] for r in rows])
    res = run_select(pool, scores, tmp_path / "plain", "--top", "2")
    assert res.exit_code == 0, res.output
    res = run_select(pool, scores, tmp_path / "copied", "--top", "2", "--copy-images")
    assert res.exit_code == 0, res.output
    assert "none to place" in flat(res)
    assert not (tmp_path / "copied" / "images").exists()
    plain, copied = (pq.read_table(tmp_path / d / "pool.parquet") for d in ("plain", "copied"))
    assert copied.equals(plain) and copied.schema.equals(plain.schema, check_metadata=True)


def test_hf_folder_with_image_paths_is_rewritten(tmp_path, monkeypatch):
    files = make_images(tmp_path)
    records = image_records(files)[:2]
    pool = write_pool_file(records, tmp_path / "pool" / "pool_hf", "hf")
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    out = tmp_path / "out"
    res = run_select(pool, scores, out, "--top", "2", "--copy-images")
    assert res.exit_code == 0, res.output
    shutil.rmtree(tmp_path / "pool")
    summary = validate_elsewhere(out / "pool_hf", tmp_path / "cwd", monkeypatch)
    assert (summary["valid"], summary["rejected"]) == (2, {})


# --- LLaMA-Factory -------------------------------------------------------------------------------


Conversation = list[tuple[str, str]]  # (role, content)


def read_like_llamafactory(dataset_dir: Path, name: str) -> list[tuple[Conversation, list[str]]]:
    """Read dataset `name` the way LLaMA-Factory's data/README.md documents (sharegpt format):
    `dataset_dir/file_name`, the `columns` and `tags` of its dataset_info.json entry, images
    resolved against the dataset folder (`media_dir` defaults to it). Checks what LLaMA-Factory
    checks: role order, an even number of turns, one image per <image> placeholder."""
    entry = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))[name]
    assert entry["formatting"] == "sharegpt"
    columns, tags = entry["columns"], entry["tags"]
    path = dataset_dir / entry["file_name"]
    text = path.read_text(encoding="utf-8")
    examples = json.loads(text) if text.lstrip().startswith("[") else [
        json.loads(line) for line in text.splitlines() if line.strip()
    ]  # fmt: skip
    out = []
    for ex in examples:
        messages = ex[columns["messages"]]
        if messages[0][tags["role_tag"]] == tags["system_tag"]:
            messages = messages[1:]
        turns = []
        for i, m in enumerate(messages):
            role = m[tags["role_tag"]]
            assert role == (tags["user_tag"], tags["assistant_tag"])[i % 2], messages
            turns.append(("user" if i % 2 == 0 else "assistant", m[tags["content_tag"]]))
        assert len(turns) % 2 == 0
        images = ex.get(columns.get("images", ""), None) or []
        images = images if isinstance(images, list) else [images]
        resolved = [str(dataset_dir / p) for p in images]
        assert all(os.path.isfile(p) for p in resolved), resolved
        assert sum(c.count("<image>") for _, c in turns) == len(images)
        out.append((turns, resolved))
    return out


def test_llamafactory_messages_subset_reads_back(tmp_path, monkeypatch):
    files = make_images(tmp_path)
    records = image_records(files)
    records[1]["messages"].insert(0, {"role": "system", "content": "Be brief."})
    pool = write_pool_file(records, tmp_path / "pool" / "pool.jsonl", "jsonl")
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    out = tmp_path / "runs" / "top5"
    res = run_select(pool, scores, out, "--top", "5", "--copy-images", "--llamafactory")
    assert res.exit_code == 0, res.output
    assert "entry 'top5'" in flat(res) and "warning: LLaMA-Factory" not in flat(res)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {
        "top5": {
            "file_name": "pool.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }
    monkeypatch.chdir(tmp_path)  # LLaMA-Factory resolves against dataset_dir, not the cwd
    read = read_like_llamafactory(out, "top5")
    samples = list(iter_samples(pool))[:5]
    assert [t for t, _ in read] == [
        [(t.role, t.content) for t in s.turns if t.role != "system"] for s in samples
    ]
    assert [[Path(p).read_bytes() for p in imgs] for _, imgs in read] == [
        [im.read_bytes() for im in s.images] for s in samples
    ]
    # `datasets` (what LLaMA-Factory loads files with) reads the subset as one table.
    import datasets

    ds = datasets.load_dataset(
        "json", data_files=str(out / "pool.jsonl"), split="train", cache_dir=str(tmp_path / "c")
    )
    assert ds.column_names[:3] == ["id", "messages", "images"] and len(ds) == 5


def test_llamafactory_llava_subset_uses_sharegpt_defaults(tmp_path):
    make_images(tmp_path)
    records = [
        {
            "id": f"l{i}",
            "image": "images/a.png" if i % 2 else "images/sub/a.png",
            "conversations": [
                {"from": "human", "value": f"<image>\nWhat is {i}?"},
                {"from": "gpt", "value": str(i)},
            ],
        }
        for i in range(4)
    ]
    pool = write_pool_file(records, tmp_path / "pool" / "llava.json", "json")
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    out = tmp_path / "llava_sub"
    res = run_select(pool, scores, out, "--top", "3", "--link-images", "--llamafactory")
    assert res.exit_code == 0, res.output
    entry = json.loads((out / "dataset_info.json").read_text())["llava_sub"]
    assert entry["columns"] == {"messages": "conversations", "images": "image"}
    assert entry["tags"] == {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "system_tag": "system",
    }
    read = read_like_llamafactory(out, "llava_sub")
    assert [t[1][1] for t, _ in read] == ["0", "1", "2"]
    assert [len(imgs) for _, imgs in read] == [1, 1, 1]


def test_llamafactory_merges_into_an_existing_dataset_info(tmp_path):
    files = make_images(tmp_path)
    records = image_records(files)
    pool = write_pool_file(records, tmp_path / "pool" / "pool.jsonl", "jsonl")
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    out = tmp_path / "data"
    out.mkdir()
    mine = {"file_name": "mine.json", "formatting": "alpaca"}
    (out / "dataset_info.json").write_text(json.dumps({"mine": mine, "data": mine}))
    args = ("--top", "2", "--copy-images", "--llamafactory")
    for _ in range(2):  # a second run replaces its own entry, it does not add another
        res = run_select(pool, scores, out, *args)
        assert res.exit_code == 0, res.output
        info = json.loads((out / "dataset_info.json").read_text())
        assert list(info) == ["mine", "data", "data_pool"]
        assert info["mine"] == info["data"] == mine  # same name, another file: kept
        assert info["data_pool"]["file_name"] == "pool.jsonl"
    (out / "dataset_info.json").write_text("[1, 2]")
    (out / "pool.jsonl").unlink()
    res = run_select(pool, scores, out, *args)
    assert res.exit_code == 2 and "not an object" in flat(res)
    assert not (out / "pool.jsonl").exists()  # refused before any work


def test_llamafactory_names_records_it_would_refuse(tmp_path):
    files = make_images(tmp_path)
    records = image_records(files)
    records[0]["messages"][0]["content"] = [{"type": "image"}, {"type": "text", "text": "q"}]
    records[1]["messages"] = list(reversed(records[1]["messages"]))  # assistant first
    pool = write_pool_file(records, tmp_path / "pool" / "pool.jsonl", "jsonl")
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    res = run_select(pool, scores, tmp_path / "runs" / "o", "--top", "4", "--llamafactory")
    assert res.exit_code == 0, res.output
    text = flat(res)
    assert "typed parts" in text and "(e.g. m0)" in text
    assert "alternating" in text and "(e.g. m1)" in text
    assert "image path not found" in text and "--copy-images" in text  # paths not rewritten


# --- refusals and warnings -----------------------------------------------------------------------


def test_copy_and_link_together_is_a_one_line_error(tmp_path):
    files = make_images(tmp_path)
    pool = write_pool_file(image_records(files), tmp_path / "pool" / "pool.jsonl", "jsonl")
    scores = scores_for(tmp_path, pool, [f"m{i}" for i in range(6)])
    out = tmp_path / "o"
    res = run_select(pool, scores, out, "--top", "2", "--copy-images", "--link-images")
    assert res.exit_code == 2
    assert "--copy-images and --link-images are mutually exclusive" in flat(res)
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()
    hf = write_pool_file(image_records(files)[:2], tmp_path / "pool" / "hf", "hf")
    res = run_select(hf, scores, out, "--top", "2", "--llamafactory")
    assert res.exit_code == 2 and "Dataset.to_parquet" in flat(res) and not out.exists()


def test_no_limit_warns_that_everything_is_kept(tmp_path):
    files = make_images(tmp_path)
    pool = write_pool_file(image_records(files), tmp_path / "pool" / "pool.jsonl", "jsonl")
    scores = scores_for(tmp_path, pool, [f"m{i}" for i in range(6)])
    res = run_select(pool, scores, tmp_path / "all")
    assert res.exit_code == 0, res.output
    warning = [line for line in res.output.splitlines() if "no limit" in line]
    assert len(warning) == 1, res.output
    for flag in ("--top", "--budget-tokens", "--min-utility", "--drop-toxic"):
        assert flag in warning[0]
    assert "kept 6 of 6" in flat(res)
    for limit in (
        ["--top", "3"],
        ["--drop-toxic"],
        ["--min-utility", "0"],
        ["--budget-tokens", "9"],
    ):
        res = run_select(pool, scores, tmp_path / "some", *limit)
        assert res.exit_code == 0 and "no limit" not in res.output, (limit, res.output)


def test_copied_images_and_dataset_info_honour_the_umask(tmp_path):
    """Like every other output: shareable under the umask, not the source file's own mode."""
    files = make_images(tmp_path)
    files["in_a"].chmod(0o600)
    records = image_records(files)
    pool = write_pool_file(records, tmp_path / "pool" / "pool.jsonl", "jsonl")
    scores = scores_for(tmp_path, pool, [r["id"] for r in records])
    out = tmp_path / "o"
    old = os.umask(0o027)
    try:
        res = run_select(pool, scores, out, "--top", "1", "--copy-images", "--llamafactory")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    for path in (out / "images" / "images" / "a.png", out / "dataset_info.json"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o640), path
