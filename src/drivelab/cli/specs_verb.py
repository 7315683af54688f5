"""The `specs` verb: the backbone specification table (kkelchte's "Gather specifications")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from drivelab.cli.app import FORCE_OPTION, app, err, out
from drivelab.outputs import check_output, write_text


@app.command()
def specs(
    backbones: Annotated[list[str] | None, typer.Argument(
        help="Seed zoo names (alex, vgg16, inception, res18, dense, squeeze, tiny, xception, "
             "inception_resnet_v2, mobilenetv2), timm models or torchvision:<name>; default: the zoo.")] = None,
    input_size: Annotated[tuple[int, int], typer.Option("--input-size", help="Frame height and width.")] = (112, 112),
    frames: Annotated[int, typer.Option("--frames", help="Stacked RGB frames per sample.")] = 1,
    batch: Annotated[int, typer.Option("--batch", help="Batch B for memory and the batched rates.")] = 16,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed forwards per rate (median).")] = 5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the raw numbers as JSON.")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write the raw numbers as CSV.")] = None,
    md_path: Annotated[Path | None, typer.Option("--md", help="Write the table as Markdown.")] = None,
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Measure backbones here: layers, parameters, FLOPs, memory, frames/s on CPU (and GPU).

    Frames/s are medians of timed forwards on this machine (1 thread and all threads; the GPU
    when there is one); random weights, eval mode, no gradients.
    """
    from drivelab.models.specs import (
        SpecsPlan,
        check_specs_memory,
        measure_backbone,
        resolve_networks,
    )
    from drivelab.models.specs_table import (
        console_table,
        describe,
        machine,
        to_csv,
        to_json,
        to_markdown,
    )

    plan = SpecsPlan(input_size=input_size, frames=frames, batch=batch, repeats=repeats)
    outputs = {flag: path for flag, path in (("--json", json_path), ("--csv", csv_path), ("--md", md_path))
               if path is not None}
    suffixes = {"--json": ".json", "--csv": ".csv", "--md": ".md"}
    for flag, path in outputs.items():
        check_output(path, flag, (suffixes[flag],), force=force)
    networks = resolve_networks(list(backbones or []))
    check_specs_memory(networks, plan)
    rows = []
    for network, name in networks:
        started = time.perf_counter()
        rows.append(measure_backbone(network, name, plan))
        err.print(f"measured {network} ({name}) in {time.perf_counter() - started:.0f} s", markup=False,
                  highlight=False)
    host = machine()
    head, cells = console_table(rows, plan)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title=describe(plan, host),
                  caption="layers: feature (conv) / decision (linear) in the backbone; params: PyTorch "
                          "count; GFLOPs and frames/s per sample; 1T/nT: CPU with 1 / all threads",
                  title_justify="left", caption_justify="left")
    for header in head:
        table.add_column(header, justify="left" if header == "network" else "right", no_wrap=True)
    for row in cells:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)
    texts = {"--json": lambda: to_json(rows, plan, host), "--csv": lambda: to_csv(rows, plan),
             "--md": lambda: to_markdown(rows, plan, host)}
    for flag, path in outputs.items():
        write_text(path, texts[flag](), force=force, flag=flag)
        out.print(f"[green]{flag[2:]}[/] {escape(str(path))}", soft_wrap=True)
