"""Gemma 3 (`gemma3`): not registered yet; `--arch gemma3` explains why.

transformers 5.24 builds, saves and trains a tiny `Gemma3ForConditionalGeneration` offline (and
its processor has no video part), but ostselect's cached-prefix loss replays the decoder layers
with one causal mask and one rotary table for every layer. Gemma 3 alternates sliding-window and
global layers with different rotary bases and lets an image's tokens attend to each other
bidirectionally (from `token_type_ids`), so the replay would silently compute a different loss.
Supporting it means per-layer-type masks and rotary tables in `proxy.prefix.prepare` /
`proxy.losses.tail_loss` and in the per-sample rows.
"""

from __future__ import annotations

from ostselect.proxy.families.registry import register_unsupported

register_unsupported(
    "gemma3",
    "ostselect's cached-prefix loss replays every decoder layer with one causal mask and one "
    "rotary table, but Gemma 3 alternates sliding-window/global layers with different rotary "
    "bases and attends bidirectionally within an image (see docs/families.md)",
)
