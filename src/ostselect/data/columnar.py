"""Parquet files and Hugging Face `datasets` folders: rows in batches, subsets with the same schema.

pyarrow and datasets are imported here, lazily, so `import ostselect.data` stays light. Rows are
read a batch at a time (HF Arrow files are memory-mapped), so pools larger than memory stream.
Image columns arrive as the `{"bytes", "path"}` structs `datasets` writes for Image features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ostselect.data.jsontext import PoolError

BATCH_ROWS = 256


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (
        (path / "state.json").exists()
        or (path / "dataset_info.json").exists()
        or (path / "dataset_dict.json").exists()
    )


def iter_parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(0-based row index, row as a Python dict) for every row, one row group batch at a time."""
    import pyarrow as pa

    pf = _open_parquet(path)
    index = 0
    batches = pf.iter_batches(batch_size=BATCH_ROWS)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:
            raise PoolError(f"{path}: Parquet data unreadable after row {index} ({e})") from None
        if batch is None:
            return
        for row in batch.to_pylist():
            yield index, row
            index += 1


def write_parquet_subset(
    path: Path,
    out_path: Path,
    keep: Callable[[int], bool],
    rewrite: Callable[[dict[str, Any]], bool] | None = None,
) -> int:
    """Copy the rows whose index `keep` accepts, in order, with the source schema (and metadata).

    `rewrite` may change a kept row in place (returning True when it did): such batches are rebuilt
    from Python rows with the same schema; untouched batches are copied as they are.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = _open_parquet(path)
    written = 0
    index = 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out_path, pf.schema_arrow) as writer:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            mask = pa.array([keep(index + i) for i in range(batch.num_rows)], type=pa.bool_())
            index += batch.num_rows
            kept = _rewritten(batch.filter(mask), rewrite)
            if kept.num_rows:
                writer.write_batch(kept)
                written += kept.num_rows
    return written


def _rewritten(batch, rewrite: Callable[[dict[str, Any]], bool] | None):  # pa.RecordBatch
    """`batch` with `rewrite` applied to each row; the same object when no row changed."""
    import pyarrow as pa

    if rewrite is None or not batch.num_rows:
        return batch
    rows = batch.to_pylist()
    changed = [rewrite(row) for row in rows]
    return pa.RecordBatch.from_pylist(rows, schema=batch.schema) if any(changed) else batch


def parquet_rows(path: Path) -> int:
    return _open_parquet(path).metadata.num_rows


def _open_parquet(path: Path):  # -> pyarrow.parquet.ParquetFile
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise PoolError(f"{path}: not a readable Parquet file ({e})") from None


def load_hf(path: Path):  # -> datasets.Dataset
    """`load_from_disk`, insisting on one split (point a DatasetDict at one split)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise PoolError(f"{path}: not a readable `datasets` folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = ", ".join(ds)
        raise PoolError(
            f"{path} holds several splits ({splits}): pass one split's folder, e.g. {path}/train"
        )
    return ds


def iter_hf_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows as stored (Image features stay undecoded `{"bytes","path"}` dicts), in order."""
    ds = load_hf(path)
    table_view = ds.with_format("arrow")
    for start in range(0, len(ds), BATCH_ROWS):
        for i, row in enumerate(table_view[start : start + BATCH_ROWS].to_pylist()):
            yield start + i, row


def hf_rows(path: Path) -> int:
    return len(load_hf(path))


def write_hf_subset(
    path: Path,
    out_path: Path,
    indices: list[int],
    rewrite: Callable[[dict[str, Any]], bool] | None = None,
) -> int:
    """`Dataset.select` the kept rows (features and all) and `save_to_disk` them.

    `rewrite` (see `write_parquet_subset`) makes the subset an in-memory table of the rewritten
    rows with the same features; it is only used when a row changes (image paths, not bytes).
    """
    ds = load_hf(path)
    subset = ds.select(indices)
    if rewrite is not None:
        import pyarrow as pa
        from datasets import Dataset
        from datasets.table import InMemoryTable

        table = subset.with_format("arrow")[:]
        batches = table.to_batches(max_chunksize=BATCH_ROWS)
        rewritten = [_rewritten(b, rewrite) for b in batches]
        if any(new is not old for new, old in zip(rewritten, batches, strict=True)):
            new_table = pa.Table.from_batches(rewritten, schema=table.schema)
            subset = Dataset(InMemoryTable(new_table), info=subset.info.copy())
    subset.save_to_disk(str(out_path))
    return len(indices)
