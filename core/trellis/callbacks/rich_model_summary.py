"""RichModelSummary: ModelSummary's table drawn by rich."""

from __future__ import annotations

import importlib.util
from typing import Any

from trellis.callbacks.model_summary import ModelSummary, get_formatted_model_size, get_human_readable_count


class RichModelSummary(ModelSummary):
    """The layer summary as a rich table, with the totals below it (the default summary next to a
    RichProgressBar). `header_style` (a summarize keyword) styles the headers."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if importlib.util.find_spec("rich") is None:
            raise ModuleNotFoundError(
                "`RichModelSummary` requires `rich` to be installed. Install it by running `pip install -U rich`.")
        super().__init__(max_depth, **summarize_kwargs)

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        from rich import get_console
        from rich.table import Table

        console = get_console()
        headers = [header for header, _ in summary_data]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        table.add_column(" ", style="dim")
        table.add_column("Name", justify="left", no_wrap=True)
        table.add_column("Type")
        table.add_column("Params", justify="right")
        if "Params per Device" in headers:
            table.add_column("Params per Device", justify="right")
        table.add_column("Mode")
        table.add_column("FLOPs", justify="right")
        for header in ("In sizes", "Out sizes"):
            if header in headers:
                table.add_column(header, justify="right", style="white")
        for row in zip(*(cells for _, cells in summary_data)):
            table.add_row(*row)
        console.print(table)

        counts = [trainable_parameters, total_parameters - trainable_parameters, total_parameters]
        cells = [f"{get_human_readable_count(int(count)):<10}" for count in counts]
        cells.append(f"{get_formatted_model_size(model_size):<10}")
        grid = Table.grid(expand=True)
        grid.add_column()
        grid.add_column()
        grid.add_row(f"[bold]Trainable params[/]: {cells[0]}")
        grid.add_row(f"[bold]Non-trainable params[/]: {cells[1]}")
        grid.add_row(f"[bold]Total params[/]: {cells[2]}")
        grid.add_row(f"[bold]Total estimated model params size (MB)[/]: {cells[3]}")
        grid.add_row(f"[bold]Modules in train mode[/]: {total_training_modes['train']}")
        grid.add_row(f"[bold]Modules in eval mode[/]: {total_training_modes['eval']}")
        grid.add_row(f"[bold]Total FLOPs[/]: {get_human_readable_count(total_flops)}")
        console.print(grid)
