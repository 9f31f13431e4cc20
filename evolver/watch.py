"""`evolver watch`: a local web page that shows runs as they happen.

Plotly's Dash draws it: the project draws with Plotly already, Dash serves every script the page needs
from the installed package (no CDN: a rig computer is often offline), and a figure's `extendData` sends a
page only the generations it has not seen. The page asks twice a second (a `dcc.Interval`); the server
answers from `watch_data.Feed`s, which read the run folders through the run reader and nothing else: the
running process is never asked anything, so a watcher can start, stop and restart at any time.

Safety: the server binds 127.0.0.1 unless told otherwise; no endpoint writes or runs anything; a page may
name only run folders inside the served folders; a host other than a loopback one needs a token, checked
on every request (docs/watch.md).
"""
from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import math
import os
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from evolver.records import is_session
from evolver.watch_data import Feed, Feeds, Served, file_url, number, sparkline, status_style
from evolver.watch_session import register as register_session_page
from evolver.watch_session import session_page
from evolver_common import BadInput

TICK_MS = 500  # how often a run's page asks for what is new
LIST_TICK_MS = 2000  # and a page of many runs
SHOWN_TICK_MS = 1000  # and for the last generation's images (drawn again at most every watch_data.SHOWN_EVERY)
IDLE_TICK_MS = 5000  # both, for a run no process holds (finished or interrupted: it may be resumed)
STRIP = 24  # best images of every Kth generation on a run's page
TOKEN_COOKIE = "evolver_watch_token"
STYLE = {"font-family": "system-ui, sans-serif", "margin": "12px 20px", "color": "#222"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(paths: list[Path], token: str | None = None):
    """The Dash app that serves the runs in `paths` (run folders, unit sets' folders, sweeps' folders or
    folders of runs); with `token`, every request must carry it."""
    import dash
    import flask
    from dash import ALL, Input, Output, State, dcc, html

    served, feeds = Served(paths), Feeds()
    app = dash.Dash(__name__, title="evolver watch", suppress_callback_exceptions=True, serve_locally=True,
                    update_title=None)
    app.layout = html.Div([dcc.Location(id="url"), html.Div(id="page")], style=STYLE)
    if token is not None:
        _require_token(app.server, token)

    @app.server.route("/files/<int:root>/<path:file>")
    def picture(root: int, file: str):
        try:
            path = served.file(f"{root}/{flask.request.args.get('run', '')}".rstrip("/"), file)
        except BadInput as err:
            return flask.Response(str(err), status=404, mimetype="text/plain")
        if not path.is_file():
            return flask.Response(f"{file} is not written yet.", status=404, mimetype="text/plain")
        return flask.send_file(path, mimetype="image/png", max_age=0)

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def route(pathname: str | None):
        pathname = unquote(pathname or "/")
        try:
            if pathname.startswith("/run/"):
                key = pathname[len("/run/"):]
                return run_page(key, feeds(served.folder(key)))
            if pathname.startswith("/session/"):
                return session_page(served, feeds, pathname[len("/session/"):])
            if pathname != "/":
                raise BadInput(f"There is no page at {pathname}. This watcher shows {served.describe()}: its "
                               "list of runs is at /, each run at /run/….")
            runs = served.runs()
            if len(runs) == 1 and runs[0][1] in served.roots:
                return run_page(runs[0][0], feeds(runs[0][1]))
            if len(served.roots) == 1 and is_session(served.roots[0]):
                return session_page(served, feeds, "0")
            return list_page(served)
        except BadInput as err:
            return error_page(str(err))

    register_session_page(app, served, feeds)

    @app.callback(Output("runs", "children"), Output("goto", "href"), Input("list-tick", "n_intervals"))
    def list_rows(_):
        runs = served.runs()
        if len(runs) == 1 and runs[0][1] in served.roots:  # the run this watcher waited for is made
            return dash.no_update, f"/run/{quote(runs[0][0])}"
        return run_rows(served, feeds, runs), dash.no_update

    @app.callback(Output("trajectory", "extendData"), Output("sent", "data"), Output("status", "children"),
                  Output("status", "style"), Output("counts", "children"), Output("best", "src"),
                  Output("best-caption", "children"), Output("strip", "children"), Output("run-tick", "interval"),
                  Output("shown-tick", "interval"), Input("run-tick", "n_intervals"), State("sent", "data"))
    def advance(_, sent):
        try:
            feed = feeds(served.folder(sent["key"]))
            status = feed.status()
        except (BadInput, OSError, ValueError):  # the folder gone or damaged while watched: say so, keep what is drawn
            return (dash.no_update, dash.no_update, "failed", status_style("failed"), *(dash.no_update,) * 4,
                    IDLE_TICK_MS, IDLE_TICK_MS)
        ticks = (TICK_MS, SHOWN_TICK_MS) if status in ("running", "starting") else (IDLE_TICK_MS, IDLE_TICK_MS)
        if feed.generation == sent["gen"]:
            return (dash.no_update, dash.no_update, status, status_style(status), *(dash.no_update,) * 4, *ticks)
        extension = [extend(feed, sent["gen"], sent["traces"]), list(range(len(sent["traces"])))]
        return (extension, {**sent, "gen": feed.generation}, status, status_style(status), counts(feed),
                *best_image(sent["key"], feed), strip(sent["key"], feed), *ticks)

    @app.callback(Output("shown", "children"), Output("shown-gen", "data"), Input("shown-tick", "n_intervals"),
                  State("sent", "data"), State("shown-gen", "data"))
    def last_generation(_, sent, drawn):
        gen, shown = feeds(served.folder(sent["key"])).shown()
        if gen == drawn:
            return dash.no_update, dash.no_update
        if isinstance(shown, str):
            return html.P(shown), gen
        title = html.H3(f"Generation {gen}: its {len(shown)} images and their responses (click one)")
        return [title, html.Div([
            html.Figure([html.Img(src=s.src, id={"type": "shown", "index": i}, n_clicks=0,
                                  title=f"image {s.image_id}: {number(s.response)}",
                                  style={"width": "72px", "height": "72px", "cursor": "pointer"}),
                         html.Figcaption(number(s.response), style={"font-size": "11px"})],
                        style={"display": "inline-block", "margin": "2px", "text-align": "center"})
            for i, s in enumerate(shown)])], gen

    @app.callback(Output("picked", "children"), Input({"type": "shown", "index": ALL}, "n_clicks"),
                  State("sent", "data"), prevent_initial_call=True)
    def pick(clicks, sent):
        index = dash.ctx.triggered_id["index"] if dash.ctx.triggered_id and any(clicks) else None
        gen, shown = feeds(served.folder(sent["key"])).shown()
        if index is None or isinstance(shown, str) or index >= len(shown):
            return dash.no_update
        s = shown[index]
        return (f"Image {s.image_id}, generation {gen}: response {number(s.response)}, "
                f"code norm {s.code_norm:.3g}.")

    return app


def _require_token(server, token: str) -> None:
    import flask

    @server.before_request
    def check():
        given = (flask.request.args.get("token") or flask.request.cookies.get(TOKEN_COOKIE)
                 or flask.request.headers.get("Authorization", "").removeprefix("Bearer "))
        if not hmac.compare_digest(given.encode(), token.encode()):
            return flask.Response("This watcher needs its token: open the address with ?token=… (the value of the "
                                  "variable named by --token-env where the watcher runs).", status=401,
                                  mimetype="text/plain")
        flask.g.token_in_url = "token" in flask.request.args

    @server.after_request
    def remember(response):
        if getattr(flask.g, "token_in_url", False):  # the page's own requests carry it from now on
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response


def traces(feed: Feed) -> list[tuple[str, str]]:
    """(name, column) of the trajectory's lines, in their order; `references` is the interleaved
    reference images' mean response."""
    columns = feed.run.directory.headers()["generations.csv"]  # known before the first generation ends
    lines = [("best", "best"), ("mean", "mean"), ("best so far", "best_so_far")]
    lines += [(name, c) for name, c in (("returned image", "returned"),
                                        ("best noise-free so far", "best_clean_so_far")) if c in columns]
    if "references.csv" in feed.run.directory.headers():
        lines.append(("reference images (mean)", "references"))
    return lines


def extend(feed: Feed, after: int, columns: list[str]) -> dict:
    """The trajectory's points after generation `after`: {"x": [...a line], "y": [...a line]}."""
    xs, ys = [], []
    for column in columns:
        if column == "references":
            refs = feed.references[feed.references.index > after]
            x, y = refs.index.tolist(), refs.tolist()
        else:
            rows = feed.generations[feed.generations["gen"] > after]
            x, y = rows["gen"].tolist(), rows[column].tolist()
        xs.append(x)
        ys.append([v if math.isfinite(v) else None for v in y])
    return {"x": xs, "y": ys}


def counts(feed: Feed) -> str:
    seconds = feed.generations["seconds"].to_numpy() if len(feed.generations) else np.array([])
    pace = f"{seconds[-1]:.2f} s a generation (median {np.median(seconds):.2f})" if len(seconds) else "no pace yet"
    again = feed.run.state.represented if feed.run.state else 0
    return (f"{feed.generation + 1} of {feed.planned} generations · {feed.images:,} images shown · "
            f"{again:,} shown again for a missing response · {feed.missing:,} responses missing · {pace}")


def best_image(key: str, feed: Feed) -> tuple[str, str]:
    best = feed.run.best
    if best is None:
        return "", "No response has come back yet."
    caption = (f"image {best.image_id} of generation {best.generation}: response {number(best.response)}"
               + (f" (mean of {best.presentations} presentations)" if best.presentations > 1 else "")
               + (f", noise-free {number(best.clean)}" if math.isfinite(best.clean) and best.clean != best.response
                  else ""))
    return f"{file_url(key, 'best.png')}&image={best.image_id}", caption  # fetched again when the best changes


def strip(key: str, feed: Feed) -> list:
    from dash import html

    every = max(1, math.ceil((feed.generation + 1) / STRIP))
    gens = list(range(0, feed.generation + 1, every))
    return [html.Figure([html.Img(src=file_url(key, f"images/gen_{g:04d}.png"), style={"width": "56px"}),
                         html.Figcaption(str(g), style={"font-size": "11px"})],
                        style={"display": "inline-block", "margin": "1px", "text-align": "center"}) for g in gens]


def run_page(key: str, feed: Feed):
    from dash import dcc, html
    import plotly.graph_objects as go

    lines = traces(feed)
    figure = go.Figure(layout={"xaxis_title": "generation", "yaxis_title": "response", "height": 380,
                               "margin": {"l": 50, "r": 10, "t": 10, "b": 40}, "uirevision": key,
                               "legend": {"orientation": "h", "y": -0.2}})
    for name, _ in lines:
        figure.add_scatter(x=[], y=[], mode="lines", name=name)
    if feed.run.reference_set is not None:
        figure.add_hline(y=float(feed.run.reference_set["score"].max()), line_dash="dot",
                         annotation_text="best reference image")
    config = feed.run.config
    shown_config = {"run": config["run"], "resolved": config.get("resolved"), "command": config.get("command")}
    return html.Div([
        dcc.Interval(id="run-tick", interval=TICK_MS),
        dcc.Store(id="sent", data={"key": key, "gen": -1, "traces": [c for _, c in lines]}),
        dcc.Interval(id="shown-tick", interval=SHOWN_TICK_MS), dcc.Store(id="shown-gen", data=None),
        html.P(dcc.Link("← all runs", href="/")),
        html.H2([f"{feed.path.name} ", html.Span(id="status")]),
        html.P(id="counts"),
        html.Div([
            html.Div(dcc.Graph(id="trajectory", figure=figure, config={"displaylogo": False}),
                     style={"flex": "3", "min-width": "420px"}),
            html.Div([html.H3("Best so far"), html.Img(id="best", style={"width": "256px",
                                                                          "image-rendering": "pixelated"}),
                      html.P(id="best-caption", style={"font-size": "13px"})], style={"flex": "1"}),
        ], style={"display": "flex", "gap": "16px", "flex-wrap": "wrap"}),
        html.H3("The best image of each generation"), html.Div(id="strip"),
        html.Div(id="shown"), html.P(id="picked"),
        html.Details([html.Summary("Configuration"),
                      html.Pre(json.dumps(shown_config, indent=1), style={"font-size": "12px"})]),
    ])


def list_page(served: Served):
    from dash import dcc, html

    return html.Div([
        dcc.Interval(id="list-tick", interval=LIST_TICK_MS), dcc.Location(id="goto", refresh=True),
        html.H2("Runs"), html.P(f"in {served.describe()}"),
        html.Table(id="runs", style={"border-collapse": "collapse"}),
    ])


def run_rows(served: Served, feeds: Feeds, runs: list[tuple[str, Path]]) -> list:
    from dash import dcc, html

    cell = {"padding": "3px 10px", "border-bottom": "1px solid #ddd", "text-align": "left"}
    rows = [html.Tr([html.Th(h, style=cell) for h in ("run", "status", "generations", "best so far", "")])]
    if not runs:
        return [html.Tr(html.Td("No run here yet; the list follows as runs are made.", style=cell))]
    sessions = set()
    for key, path in runs:
        if is_session(path.parent) and path.parent not in sessions:  # its threads follow, indented
            sessions.add(path.parent)
            session = key.rpartition("/")[0]
            rows.append(html.Tr(html.Td(dcc.Link(f"{session.partition('/')[2] or path.parent.name}: a session, its "
                                                 "threads side by side", href=f"/session/{quote(session)}"),
                                        colSpan=5, style=cell)))
        try:
            feed = feeds(path)
            status, gen = feed.status(), f"{feed.generation + 1} of {feed.planned}"
            values = feed.generations["best_so_far"].to_numpy() if len(feed.generations) else np.array([])
            best = number(values[-1]) if len(values) else ""
        except (BadInput, OSError, ValueError):  # its records cannot be read: damaged, or a run that failed so
            status, gen, best, values = "failed", "", "", np.array([])
        rows.append(html.Tr([
            html.Td(dcc.Link(key.partition("/")[2] or path.name, href=f"/run/{quote(key)}"), style=cell),
            html.Td(html.Span(status, style=status_style(status)), style=cell),
            html.Td(gen, style=cell), html.Td(best, style=cell),
            html.Td(html.Img(src=sparkline(values)), style=cell)]))
    return rows


def error_page(message: str):
    from dash import dcc, html

    return html.Div([html.H2("Nothing to show here"), html.P(message, id="error"),
                     html.P(dcc.Link("← all runs", href="/"))])


def serve(paths: list[Path], host: str = "127.0.0.1", port: int = 8050, token: str | None = None,
          until_stdin_closes: bool = False, announce=print, yield_to_runs: bool = False) -> None:
    """Serve the watch page until Ctrl-C (or, `until_stdin_closes`, until this process's standard input
    closes: the run that started it has ended). A non-loopback `host` needs a `token`. `yield_to_runs`
    lowers this process's priority (nice 10) and keeps torch to one thread: for a process of its own."""
    import logging

    from werkzeug.serving import make_server

    if not is_loopback(host) and not token:
        raise BadInput(f"--host {host} lets other machines reach the page; give it a token with --token-env NAME "
                       "(a variable holding a secret), or reach a watcher on 127.0.0.1 through an SSH tunnel "
                       "(docs/watch.md).")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app(paths, token)
    _check_free(host, port)  # werkzeug would print its own lines and exit
    if yield_to_runs:
        import torch

        if hasattr(os, "nice"):
            os.nice(10)
        torch.set_num_threads(1)  # drawing a generation's images again: one core at most
    server = make_server(host, port, app.server, threaded=True)
    if until_stdin_closes:
        threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    announce(f"Watching {served_line(paths)} at http://{host}:{server.server_port}/")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _check_free(host: str, port: int) -> None:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise BadInput(f"The watcher cannot listen on {host}:{port} ({err.strerror or err}): give another --port, or "
                       "stop what uses that one (or give a --host of this machine).") from None


def served_line(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)


@contextlib.contextmanager
def beside(path: Path, port: int = 8050):
    """A watcher of the run folder `path` (made by the run inside this block) in a process of its own,
    which ends when this block does, or when this process dies (its standard input closes). Its address
    goes to stderr; a watcher that cannot start is a warning, and the run goes on without it."""
    child = subprocess.Popen([sys.executable, "-m", "evolver", "watch", str(path), "--port", str(port),
                              "--until-stdin-closes"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = child.stderr.readline().strip()
    if first.startswith("Watching"):
        print(first, file=sys.stderr, flush=True)
        threading.Thread(target=_forward, args=(child.stderr,), daemon=True).start()
    else:
        child.wait()
        warnings.warn(f"The watch page did not start ({first or 'no reason given'} {child.stderr.read().strip()}); "
                      f"the run goes on without it. Watch it from another shell: evolver watch {path}", stacklevel=3)
    try:
        yield
    finally:
        if child.poll() is None:
            child.stdin.close()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def _forward(stream) -> None:
    for line in stream:
        print(line, end="", file=sys.stderr, flush=True)
