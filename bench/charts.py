"""Charts of bench.py's figures, drawn as PNG files for docs/performance.md.

bench.py --markdown FILE calls write_charts() with the run's figures; each chart goes
beside the table it draws, linked from FILE. matplotlib is a development dependency
(requirements-dev.txt): it is imported here only, when a chart is drawn, with the Agg
backend (no display), so that nothing else in the benchmark, and nothing in the server,
needs it.

    throughput.png  req/s and p99 latency by mode and C (the throughput phase)
    processes.png   --processes 2 against the guide's broker, and against threads
    peers.png       server.py against majortomo's Majordomo broker (PyPI)
    overload.png    answered callers a second and wasted handler calls against the
                    offered load, this tree and each --against REV (the overload sweep)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
WHISKERS = "bars: medians; whiskers: lowest-highest round"
# The throughput phase's modes, as bench.py starts them.
MODES = {
    "baseline": "baseline: the tutorial's loop, fixed",
    "inline": "server.py --workers 0",
    "workers": "server.py --workers 4",
    "async": "server.py, async handler",
}
# A series of bars: label -> (heights, [(lowest, highest)] or None), one value a group.
Series = dict[str, tuple[list[float], list[tuple[float, float]] | None]]


def new_figure(title: str, panels: int) -> tuple[Figure, list[Axes]]:
    """A figure of panels side by side, titled; matplotlib imported here, Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * panels, 4.6), dpi=DPI, layout="constrained")
    figure.suptitle(title)
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def bars(axes: Axes, groups: list[str], series: Series, ylabel: str, title: str) -> None:
    """Grouped bars, a group per label in groups and a bar per series in each, with the
    lowest-highest spread of the rounds as an error bar where there is one."""
    width = 0.8 / len(series)
    for n, (label, (heights, spreads)) in enumerate(series.items()):
        positions = [group + (n - (len(series) - 1) / 2) * width for group in range(len(groups))]
        error = None
        if spreads:
            error = [
                [height - low for height, (low, _) in zip(heights, spreads, strict=True)],
                [high - height for height, (_, high) in zip(heights, spreads, strict=True)],
            ]
        axes.bar(positions, heights, width, yerr=error, capsize=3, label=label)
    axes.set_xticks(range(len(groups)), groups)
    axes.set(ylabel=ylabel, title=title)
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", alpha=0.3)


def legend(figure: Figure, axes: Axes, title: str | None = None) -> None:
    """One legend for the whole figure, under its panels: axes' labelled lines or bars
    (every panel draws the same series in the same colours)."""
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(
        handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
        fontsize="small", title=title, title_fontsize="small",
    )  # fmt: skip


def rps(rows: list[dict]) -> tuple[list[float], list[tuple[float, float]]]:
    """Median req/s of each row, with its lowest and highest round."""
    return [row["rps"] for row in rows], [(min(row["rounds"]), max(row["rounds"])) for row in rows]


def throughput_chart(phase: dict) -> Figure:
    """req/s (median, lowest-highest round) and p99 latency by mode, a group by C."""
    modes = list(dict.fromkeys(row["mode"] for row in phase.values()))
    clients = sorted({row["clients"] for row in phase.values()})
    groups = [f"C={c}" for c in clients]
    rows = {MODES.get(mode, mode): [phase[f"{mode} C={c}"] for c in clients] for mode in modes}
    figure, (left, right) = new_figure("Throughput and p99 latency by mode, zero work", 2)
    throughput = {mode: rps(found) for mode, found in rows.items()}
    bars(left, groups, throughput, "requests/s", "Throughput")
    p99 = {mode: ([row["p99_ms"] for row in found], None) for mode, found in rows.items()}
    bars(right, groups, p99, "p99 latency (ms)", "p99 round trip, lower is better")
    for axes in (left, right):
        axes.set_xlabel("C: clients, each with one request in flight")
    legend(figure, left, WHISKERS)
    return figure


def processes_chart(phase: dict) -> Figure:
    """--processes 2 against the guide's broker (zero work) and against threads (CPU), a
    bar per target."""
    zero, cpu = phase["zero"], phase["cpu"]
    figure, (left, right) = new_figure("Worker processes: server.py --processes 2", 2)
    zero_labels = {
        "lbbroker": "guide's lbbroker,\nREQ workers",
        "lbbroker_mdp": "guide's lbbroker,\nworker.py",
        "processes": "server.py\n--processes 2",
    }
    series = {"": rps([zero[name] for name in zero_labels])}
    bars(left, list(zero_labels.values()), series, "requests/s", "Zero work, C=100")
    cpu_labels = {"threads": "server.py, 16 threads", "processes": "server.py --processes 2"}
    series = {"": rps([cpu[name] for name in cpu_labels])}
    bars(right, list(cpu_labels.values()), series, "requests/s", "examples/cpu.py, C=20")
    figure.supxlabel(WHISKERS, fontsize="small")
    return figure


def peers_chart(phase: dict) -> Figure:
    """server.py (plain and MDP clients) against majortomo's broker, by work and C."""
    labels = {
        "majortomo": "majortomo broker + its workers",
        "majortomo+w": "majortomo broker + worker.py",
        "plain": "server.py --processes 2, plain clients",
        "mdp": "server.py --processes 2, MDP clients",
    }
    figure, panels = new_figure("Majordomo brokers, 2 worker processes each (majortomo: PyPI)", 2)
    for axes, work in zip(panels, ("zero work", "examples/cpu.py"), strict=True):
        keys = [key for key in phase["rows"] if key.startswith(work)]
        groups = [key.rpartition(", ")[2] for key in keys]
        series = {
            label: rps([phase["rows"][key][name] for key in keys]) for name, label in labels.items()
        }
        bars(axes, groups, series, "requests/s", work)
    legend(figure, panels[0], WHISKERS)
    return figure


def overload_chart(phase: dict) -> Figure:
    """The sweep: answered callers a second, and the share of handler calls wasted,
    against the offered load, a line per server; capacity and the ideal for reference."""
    sweep, capacity = phase["sweep"], phase["sweep"]["capacity"]
    first = next(iter(sweep["points"].values()))
    rates = [point["rate"] for point in first]
    figure, (left, right) = new_figure(f"Overload sweep: server.py {sweep['mode']}", 2)
    ideal = [min(rate, capacity) for rate in rates]
    left.plot(rates, ideal, "k:", label="ideal: min(offered, capacity)")
    for name, points in sweep["points"].items():
        label = "this tree" if name == "this" else f"{name} (--against)"
        left.plot(rates, [point["answered_per_s"] for point in points], "o-", label=label)
        right.plot(rates, [100 * point["wasted"] for point in points], "o-", label=label)
    left.set(ylabel="callers answered/s", title="Goodput")
    right.set(ylabel="wasted handler calls (% of all)", title="Wasted work")
    for axes in (left, right):
        offered_axis(axes, first, capacity)
    legend(figure, left)
    return figure


def offered_axis(axes: Axes, points: list[dict], capacity: float) -> None:
    """The sweep's x axis: new callers a second and multiples of capacity, marked."""
    ticks = [f"{point['rate']:g}\n{point['offered']:g}x" for point in points]
    axes.set_xticks([point["rate"] for point in points], ticks)
    axes.set_xlabel(f"offered load: new callers/s, and x capacity ({capacity:g}/s)")
    axes.axvline(capacity, color="grey", linewidth=0.8, label="capacity")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)


# phase -> (file name, title, drawing function); a chart is drawn when its phase ran.
CHARTS: dict[str, tuple[str, str, Callable[[dict], Figure]]] = {
    "throughput": ("throughput.png", "Throughput and p99 latency by mode", throughput_chart),
    "processes": ("processes.png", "Worker processes against their baselines", processes_chart),
    "majordomo": ("peers.png", "server.py against majortomo's broker", peers_chart),
    "overload": ("overload.png", "Goodput and wasted work against offered load", overload_chart),
}


def write_charts(figures: dict, folder: Path) -> dict[str, list[tuple[str, Path]]]:
    """Draw the chart of each phase in figures into folder: phase -> [(title, file)]."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, list[tuple[str, Path]]] = {}
    for phase, (name, title, draw) in CHARTS.items():
        if figures.get(phase):
            draw(figures[phase]).savefig(folder / name)
            drawn[phase] = [(title, folder / name)]
    return drawn
