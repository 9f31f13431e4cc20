"""A session's page in `evolver watch` (docs/watch.md): its threads side by side, read like any run through
their Feeds: one graph of every thread's best so far and best a generation, grown by `extendData`, and a
column a thread with its status, counts and best image."""
from __future__ import annotations

import math
from urllib.parse import quote

from evolver.runs import open_session
from evolver.watch_data import Feeds, Served, file_url, number, status_style

TICK_MS = 1000  # how often a session's page asks for what is new
LINES = (("best so far", "best_so_far", "solid"), ("best", "best", "dot"))


def thread_keys(served: Served, key: str) -> list[str]:
    """The keys of the session's threads, in order."""
    session = open_session(served.session(key))
    relative = key.partition("/")[2]
    return [f"{key.partition('/')[0]}/{relative + '/' if relative else ''}{run.path.name}" for run in session.threads]


def session_page(served: Served, feeds: Feeds, key: str):
    from dash import dcc, html
    import plotly.graph_objects as go

    threads = thread_keys(served, key)
    figure = go.Figure(layout={"xaxis_title": "generation", "yaxis_title": "response", "height": 380,
                               "margin": {"l": 50, "r": 10, "t": 10, "b": 40}, "uirevision": key,
                               "legend": {"orientation": "h", "y": -0.2}})
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
    for k, thread in enumerate(threads):
        for name, _, dash in LINES:
            figure.add_scatter(x=[], y=[], mode="lines", name=f"{_label(feeds, served, thread)}: {name}",
                               line={"color": palette[k % len(palette)], "dash": dash})
    return html.Div([
        dcc.Interval(id="session-tick", interval=TICK_MS),
        dcc.Store(id="session-sent", data={"key": key, "threads": threads, "gens": [-1] * len(threads)}),
        html.P(dcc.Link("← all runs", href="/")),
        html.H2(f"{served.session(key).name}: a session of {len(threads)} threads"),
        dcc.Graph(id="session-trajectory", figure=figure, config={"displaylogo": False}),
        html.Div(id="session-threads", style={"display": "flex", "gap": "16px", "flex-wrap": "wrap"}),
    ])


def _label(feeds: Feeds, served: Served, thread: str) -> str:
    run = feeds(served.folder(thread)).run
    asked = ", ".join(f"{k}={v}" for k, v in (run.thread or {}).items())
    return f"{run.path.name} ({asked or 'as the session'})"


def register(app, served: Served, feeds: Feeds) -> None:
    """The session page's callback: what each thread added since the page last asked."""
    import dash
    from dash import Input, Output, State

    @app.callback(Output("session-trajectory", "extendData"), Output("session-sent", "data"),
                  Output("session-threads", "children"), Input("session-tick", "n_intervals"),
                  State("session-sent", "data"))
    def advance(_, sent):
        xs, ys, gens, columns = [], [], [], []
        for thread, after in zip(sent["threads"], sent["gens"]):
            feed = feeds(served.folder(thread))
            rows = feed.generations[feed.generations["gen"] > after] if len(feed.generations) else feed.generations
            for _, column, _ in LINES:
                xs.append(rows["gen"].tolist() if len(rows) else [])
                ys.append([v if math.isfinite(v) else None for v in rows[column]] if len(rows) else [])
            gens.append(feed.generation)
            columns.append(_column(thread, feed, _label(feeds, served, thread)))
        extension = [{"x": xs, "y": ys}, list(range(len(xs)))] if gens != sent["gens"] else dash.no_update
        return extension, {**sent, "gens": gens}, columns


def _column(key: str, feed, label: str):
    from dash import dcc, html

    best = feed.run.best
    status = feed.status()
    caption = "No response has come back yet." if best is None else \
        f"image {best.image_id} of generation {best.generation}: {number(best.response)}"
    return html.Div([
        html.H3(dcc.Link(label, href=f"/run/{quote(key)}"), style={"font-size": "15px"}),
        html.P([html.Span(status, style=status_style(status)),
                f" {feed.generation + 1} of {feed.planned} generations · {feed.images:,} images"]),
        html.Img(src=f"{file_url(key, 'best.png')}&image={best.image_id}" if best else "",
                 style={"width": "192px", "image-rendering": "pixelated"}),
        html.P(caption, style={"font-size": "13px"}),
    ], style={"flex": "1", "min-width": "220px"})
