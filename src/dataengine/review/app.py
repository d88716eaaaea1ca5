"""The review page (`dataengine review RUN`): a small Starlette app over a run directory.

    GET  /                 a round's items, filtered by round, status, type, filter reason, prompt
                           version and (evolved children) operator and format: the picture with the
                           annotation's boxes, the question and options, accept / reject / edit
                           (keys a, r, e; j and k move between items)
    GET  /ipo?version=N    a prompt version's IPO items, to pass or fail (keys p, f) with a failure type
                           and a comment: IPO's human review (`dataengine ipo --review page`)
    GET  /item/ROUND/ID    one item, with every decision made on it (an evolved child: its lineage)
    GET  /image/PATH       a picture, only from the run's image roots
    POST /api/decide       {"round", "item", "verdict", "edited"?, "kind"?, "comment"?}: recorded at once
    GET  /api/decisions    the last decision on each item (?round=)

Pages are rendered on the server; the script (static/review.js) only sends decisions and moves the
focus. Bad input gets an HTML page (a JSON error under /api/) with status 400 or 404, never a traceback.
"""
from __future__ import annotations

import html
import json
import time
from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import DataError
from ..records import LETTERS, QTYPES, Sample
from .run import Item, RunView
from .store import DB_NAME, Decision, ReviewStore, answer_check

PAGE_SIZE = 20
STATUSES = ("all", "kept", "rejected", "generated", "evolved")
_STATIC = resources.files("dataengine.review").joinpath("static")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    css = _STATIC.joinpath("review.css").read_text(encoding="utf-8")
    js = _STATIC.joinpath("review.js").read_text(encoding="utf-8")
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{css}</style>"
                        f"</head><body>{body}<script>{js}</script></body></html>", status_code=status)


def _error_page(status: int, message: str) -> HTMLResponse:
    body = (f"<h1>{status}: {_e({400: 'Bad request', 404: 'Not found', 405: 'Method not allowed', 415: 'Unsupported'}.get(status, 'Error'))}</h1>"
            f"<p class='error' id='error'>{_e(message)}</p><p><a href='/'>back to the items</a></p>")
    return _page("review: error", body, status)


def _nav(view: RunView, active: str) -> str:
    links = [("/", "items")] + ([("/ipo", "IPO review")] if view.ipo_versions() else [])
    return ("<nav>" + " ".join(f"<a href='{h}'{' class=active' if n == active else ''}>{n}</a>" for h, n in links)
            + f" <span class='muted'>run {_e(view.dir.name)} &middot; keys: j/k move, a accept, r reject, e edit, p pass, f fail</span></nav>")


def _boxes(item: Item, view: RunView) -> str:
    """The annotation's boxes (objects solid, text dashed) as an SVG drawn over the picture."""
    ann = view.annotations.get(item.sample.image)
    if ann is None:
        return ""
    w, h = ann.width or 1, ann.height or 1
    shapes = []
    for o in ann.objects:
        x1, y1, x2, y2 = o.bbox
        shapes.append(f"<g class='box'><rect x='{x1}' y='{y1}' width='{x2 - x1}' height='{y2 - y1}'/>"
                      f"<text x='{x1 + 1}' y='{y1 + max(h / 14, 1)}' font-size='{max(h / 16, 1):.1f}'>{_e(o.name)}</text></g>")
    for t in ann.texts:
        x1, y1, x2, y2 = t.bbox
        shapes.append(f"<rect class='textbox' x='{x1}' y='{y1}' width='{x2 - x1}' height='{y2 - y1}'/>")
    return (f"<svg class='boxes' viewBox='0 0 {w} {h}' preserveAspectRatio='none' data-boxes='{len(shapes)}'>"
            + "".join(shapes) + "</svg>")


def _decision_text(d: Decision | None) -> str:
    if d is None:
        return ""
    if d.verdict == "edit":
        return "edited: passes the filter" if not d.check else f"edited: fails the filter ({d.check})"
    if d.verdict in ("pass", "fail"):
        return d.verdict + (f" ({d.kind})" if d.kind else "") + (f": {d.comment}" if d.comment else "")
    return {"accept": "accepted", "reject": "rejected"}[d.verdict]


def _lineage(item: Item) -> str:
    """An evolved child's lineage: its parent's question, operator, evolution round, format, steps
    and the judge's verdict with its reason."""
    lin = item.sample.lineage
    if item.status != "evolved" or lin is None:
        return ""
    v = lin.verdict
    verdict = (f"{'kept' if v.kept else 'eliminated'} by {_e(v.judge)}" + (f", score {v.score:g}" if v.score is not None else "")
               + (f": {_e(v.reason)}" if v.reason else "")) if v else "none"
    parent = (f"<a href='/item/{_e(item.round)}/{_e(lin.parent)}'>{_e(item.parent.instruction)}</a>" if item.parent
              else f"<code>{_e(lin.parent)}</code>")
    steps = "".join(f"<li>{_e(x)}</li>" for x in lin.steps)
    return (f"<dl class='lineage'><dt>parent</dt><dd class='parent'>{parent}</dd>"
            f"<dt>operator</dt><dd class='operator'>{_e(lin.operator)} (evolution round {lin.round})</dd>"
            f"<dt>format</dt><dd class='format'>{_e(lin.format)}</dd>"
            + (f"<dt>steps</dt><dd><ol class='steps'>{steps}</ol></dd>" if steps else "")
            + f"<dt>judge</dt><dd class='verdict'>{verdict}</dd></dl>")


def _item_card(item: Item, view: RunView, d: Decision | None, ipo: bool = False, training: set[str] = frozenset()) -> str:
    """One item; `training`: the evolved children the round's training mix uses (marked so)."""
    s = item.sample
    shown = d.edited if d is not None and d.edited is not None else s
    opts = "".join(f"<li class='{'right' if LETTERS[i] == shown.choice_answer else ''}'>{LETTERS[i]}. {_e(o)}</li>"
                   for i, o in enumerate(shown.options))
    status = f"<span class='status {item.status}'>{item.status}{': ' + _e(item.reason) if item.reason else ''}</span>"
    if item.status == "evolved":
        status += (" <span class='training'>in the training mix</span>" if s.id in training
                   else " <span class='muted not-training'>not in the training mix</span>")
    head = (f"<div class='meta'>round {_e(item.round)} &middot; {_e(s.qtype)}. {_e(QTYPES.get(s.qtype, ('?',))[0])} "
            f"&middot; {_e(item.version)} &middot; {status} &middot; <a href='/item/{_e(item.round)}/{_e(s.id)}'><code>{_e(s.id)}</code></a></div>")
    pic = (f"<div class='pic'><img alt='{_e(s.image)}' src='/image/{_e(s.image)}'>{_boxes(item, view)}</div>")
    text = (f"<div class='q'>{_e(shown.instruction)}</div><ol class='opts'>{opts}</ol>"
            f"<div class='muted answer'>{_e(shown.answer)}</div>{_lineage(item)}")
    decided = f"<div class='decision' data-verdict='{_e(d.verdict if d else '')}'>{_e(_decision_text(d))}</div>"
    if ipo:
        from ..llm.ipo import FAILURE_TYPES
        ann = view.annotations.get(s.image)
        if ann is not None:
            from ..llm.prompt import describe
            text += f"<details><summary>annotation</summary><pre>{_e(describe(ann, s.qtype))}</pre></details>"
        kinds = "".join(f"<option value='{_e(k)}'{' selected' if d and d.kind == k else ''}>{_e(k)}</option>" for k in FAILURE_TYPES)
        controls = (f"<div class='controls'><button class='pass' data-verdict='pass'>pass (p)</button>"
                    f"<button class='fail' data-verdict='fail'>fail (f)</button> <select name='kind'>{kinds}</select> "
                    f"<input name='comment' placeholder='comment' value='{_e(d.comment if d else '')}'></div>")
    else:
        controls = ("<div class='controls'><button class='accept' data-verdict='accept'>accept (a)</button>"
                    "<button class='reject' data-verdict='reject'>reject (r)</button>"
                    "<button class='edit' data-verdict='edit'>edit (e)</button></div>" + _edit_form(shown))
    return (f"<div class='item' tabindex='0' data-round='{_e(item.round)}' data-item='{_e(s.id)}'>{pic}"
            f"<div class='body'>{head}{text}{controls}{decided}</div></div>")


def _edit_form(s: Sample) -> str:
    opts = "".join(f"<label>{LETTERS[i]} <input name='option{i}' value='{_e(o)}'></label>" for i, o in enumerate(s.options))
    letters = "".join(f"<option{' selected' if x == s.choice_answer else ''}>{x}</option>" for x in LETTERS[:len(s.options)])
    return (f"<form class='editor' hidden><label>question <input name='instruction' value='{_e(s.instruction)}'></label>"
            f"<label>answer <input name='answer' value='{_e(s.answer)}'></label>"
            f"<label>short answer <input name='short_answer' value='{_e(s.short_answer)}'></label>{opts}"
            f"<label>correct <select name='choice_answer'>{letters}</select></label>"
            f"<button type='submit' class='save'>save edit</button> <button type='button' class='cancel'>cancel</button></form>")


def _select(name: str, values: list[tuple[str, str]], current: str) -> str:
    opts = "".join(f"<option value='{_e(v)}'{' selected' if v == current else ''}>{_e(label)}</option>" for v, label in values)
    return f"<label>{name} <select name='{name}'>{opts}</select></label>"


def _lineage_filters(items: list[Item], operator: str, form: str) -> str:
    """The operator and format selects, where the round has evolved children."""
    lineages = [it.sample.lineage for it in items if it.status == "evolved" and it.sample.lineage]
    if not lineages:
        return ""
    return (_select("operator", [("", "all")] + [(o, o) for o in sorted({x.operator for x in lineages})], operator)
            + _select("format", [("", "all")] + [(f, f) for f in sorted({x.format for x in lineages})], form))


class ReviewApp:
    """The routes over one run directory and its review database."""

    def __init__(self, view: RunView, store: ReviewStore):
        self.view, self.store = view, store

    # ---- pages ----
    async def items(self, request: Request) -> Response:
        view, q = self.view, request.query_params
        rounds = view.rounds()
        if not rounds:
            return _page("review", _nav(view, "items") + "<p class='muted'>No round has generated items yet.</p>")
        k = _int(q.get("round") or rounds[-1], "round")
        items = view.items(k)  # DataError (404) for a round that is not there
        status, qtype, reason, version = q.get("status", "all"), q.get("type", ""), q.get("reason", ""), q.get("version", "")
        operator, form = q.get("operator", ""), q.get("format", "")
        if status not in STATUSES:
            raise HTTPException(400, f"status {status!r}: one of {', '.join(STATUSES)}")
        decisions = self.store.decisions(k)
        shown = [it for it in items if (status == "all" or it.status == status) and (not qtype or it.sample.qtype == _int(qtype, "type"))
                 and (not reason or it.reason.split(":")[0] == reason) and (not version or it.version == version)
                 and (not operator or (it.sample.lineage is not None and it.sample.lineage.operator == operator))
                 and (not form or (it.sample.lineage is not None and it.sample.lineage.format == form))]
        pages = max(1, -(-len(shown) // PAGE_SIZE))
        page = _int(q.get("page") or 1, "page")
        if not 1 <= page <= pages:
            raise HTTPException(404, f"page {page}: there are {pages}")
        types = sorted({it.sample.qtype for it in items})
        filters = ("<form class='filters' method='get'>"
                   + _select("round", [(str(r), f"round {r}") for r in rounds], str(k))
                   + _select("status", [(s, s) for s in STATUSES], status)
                   + _select("type", [("", "all")] + [(str(t), f"{t}. {QTYPES.get(t, ('?',))[0]}") for t in types], qtype)
                   + _select("reason", [("", "all")] + [(r, r) for r in sorted({it.reason.split(':')[0] for it in items if it.reason})], reason)
                   + _select("version", [("", "all")] + [(v, v) for v in sorted({it.version for it in items})], version)
                   + _lineage_filters(items, operator, form)
                   + "<button type='submit'>show</button></form>")
        counts = {s: sum(it.status == s for it in items) for s in STATUSES[1:]}
        done = sum(it.sample.id in decisions for it in items)
        summary = (f"<p class='summary'>round {k}: {len(items)} items ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); "
                   f"<span id='decided'>{done}</span> decided; showing {len(shown)}</p>")
        on_page = shown[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
        training = view.in_training(k) if any(it.status == "evolved" for it in on_page) else set()
        cards = "".join(_item_card(it, view, decisions.get(it.sample.id), training=training) for it in on_page)
        params = {k2: v for k2, v in {"round": k, "status": status, "type": qtype, "reason": reason, "version": version,
                                      "operator": operator, "format": form}.items() if v}
        pager = " ".join(f"<a href='/?{_e(urlencode({**params, 'page': p}))}'{' class=active' if p == page else ''}>{p}</a>"
                         for p in range(1, pages + 1)) if pages > 1 else ""
        return _page(f"review: round {k}", _nav(view, "items") + filters + summary + f"<div class='pager'>{pager}</div>"
                     + (cards or "<p class='muted'>No item matches.</p>") + f"<div class='pager'>{pager}</div>")

    async def ipo(self, request: Request) -> Response:
        view = self.view
        versions = view.ipo_versions()
        if not versions:
            raise HTTPException(404, f"{view.ipo_dir}: no IPO prompt versions (ipo/prompts.jsonl)")
        numbers = [v.version for v in versions if (view.ipo_dir / f"v{v.version}" / "items.jsonl").exists()]
        if not numbers:
            return _page("review: IPO", _nav(view, "IPO review") + "<p class='muted'>No prompt version has items yet.</p>")
        n = _int(request.query_params.get("version") or numbers[-1], "version")
        items = view.ipo_items(n)
        decisions = self.store.decisions(f"ipo-v{n}")
        v = next(x for x in versions if x.version == n)
        head = (f"<form class='filters' method='get'>{_select('version', [(str(x), f'v{x}') for x in numbers], str(n))}"
                "<button type='submit'>show</button></form>"
                f"<p class='summary'>prompt v{n}: {len(items)} items, <span id='decided'>{sum(it.sample.id in decisions for it in items)}</span> judged"
                + (f"; measured correctness {v.correctness:.0%}" if v.correctness is not None else "; waiting for verdicts")
                + f"</p><details><summary>rules</summary><pre>{_e(v.rules)}</pre></details>")
        cards = "".join(_item_card(it, view, decisions.get(it.sample.id), ipo=True) for it in items)
        return _page(f"review: IPO v{n}", _nav(view, "IPO review") + head + (cards or "<p class='muted'>No items.</p>"))

    async def item(self, request: Request) -> Response:
        """One item (round and id in the path), with every decision made on it."""
        item = self.view.item(request.path_params["round"], request.path_params["item"])  # DataError (404)
        history = self.store.history(item.sample.id)
        rows = "".join(f"<li>{_e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d.at)))}: {_e(_decision_text(d))}</li>"
                       for d in history if d.round == item.round)
        training = self.view.in_training(int(item.round)) if item.status == "evolved" else set()
        return _page(f"review: {item.sample.id}", _nav(self.view, "") + _item_card(item, self.view, self.store.get(item.round, item.sample.id),
                                                                                    ipo=item.round.startswith("ipo-"), training=training)
                     + f"<h3>decisions</h3><ol class='history'>{rows or '<li class=muted>none yet</li>'}</ol>")

    async def image(self, request: Request) -> Response:
        path = self.view.image_file(request.path_params["path"])
        return FileResponse(path)

    # ---- the API ----
    async def decide(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise HTTPException(415, "send the decision as JSON")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise HTTPException(400, "the decision is not JSON") from None
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("round", "item", "verdict")):
            raise HTTPException(400, "a decision needs round, item and verdict")
        item = self.view.item(body["round"], body["item"])  # DataError (404): no such round or item
        verdict, edited, check = body["verdict"], None, None
        ipo = item.round.startswith("ipo-")
        if verdict not in (("pass", "fail") if ipo else ("accept", "reject", "edit")):
            raise HTTPException(400, f"item {item.sample.id}: verdict {verdict!r} does not apply here")
        if verdict == "edit":
            fields = body.get("edited")
            if not isinstance(fields, dict):
                raise HTTPException(400, f"item {item.sample.id}: an edit needs the edited fields")
            allowed = {"instruction", "answer", "short_answer", "options", "choice_answer"}
            if unknown := sorted(set(fields) - allowed):
                raise HTTPException(400, f"item {item.sample.id}: these fields cannot be edited: {', '.join(unknown)}")
            try:
                edited = Sample.model_validate({**item.sample.model_dump(), **fields})
            except ValidationError as e:
                err = e.errors()[0]
                raise HTTPException(400, f"item {item.sample.id}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
            edited = edited.model_copy(update={"options": [o.strip() for o in edited.options],
                                               "instruction": edited.instruction.strip(), "answer": edited.answer.strip(),
                                               "short_answer": edited.short_answer.strip()})
            kept = [it.sample for it in self.view.items(int(item.round)) if it.status == "kept"]
            check = self.view.recheck(edited, kept) or answer_check(edited, item.sample)
        d = self.store.decide(item.round, item.sample.id, verdict, edited=edited, check=check,
                              kind=str(body.get("kind") or "") if verdict == "fail" else "", comment=str(body.get("comment") or ""))
        return JSONResponse({"round": d.round, "item": d.item, "verdict": d.verdict, "check": d.check, "text": _decision_text(d)})

    async def decisions(self, request: Request) -> Response:
        r = request.query_params.get("round")
        return JSONResponse({i: d.model_dump(mode="json") for i, d in self.store.decisions(r).items()})


def _int(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HTTPException(400, f"{what} {value!r}: not a number") from None


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if _is_api(request):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return _error_page(exc.status_code, str(exc.detail))


async def _data_error(request: Request, exc: DataError) -> Response:
    if _is_api(request):
        return JSONResponse({"error": str(exc)}, status_code=404)
    return _error_page(404, str(exc))


async def _server_error(request: Request, exc: Exception) -> Response:
    msg = f"the server could not do this ({exc.__class__.__name__}); see the terminal it runs in"
    if _is_api(request):
        return JSONResponse({"error": msg}, status_code=500)
    return _error_page(500, msg)


def create_app(run_dir: str | Path, image_root: str | Path | None = None, ipo_dir: str | Path | None = None,
               db: str | Path | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The review app over `run_dir` (DataError, one line, if it is not a run directory). Decisions go
    to `db` (default: run_dir/review.sqlite). `allowed_hosts`: Host headers accepted (None: any), so a
    page on another site cannot reach a loopback server through DNS rebinding."""
    view = RunView(run_dir, image_root, ipo_dir)
    store = ReviewStore(db or Path(run_dir) / DB_NAME)
    r = ReviewApp(view, store)
    routes = [Route("/", r.items), Route("/ipo", r.ipo), Route("/item/{round}/{item}", r.item), Route("/image/{path:path}", r.image),
              Route("/api/decide", r.decide, methods=["POST"]), Route("/api/decisions", r.decisions)]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: _http_error, DataError: _data_error, Exception: _server_error})
    app.state.view, app.state.store = view, store
    return app


def bind(host: str, port: int):
    """A socket bound to (host, port) for the server, so a port that cannot be used is known before
    the page's address is announced. DataError (one line) for a port outside 1-65535, a host that
    does not resolve, or a port in use."""
    import socket
    if not 1 <= port <= 65535:
        raise DataError(f"port {port}: not a port (1-65535)")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise DataError(f"host {host}: cannot listen there ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart right after a stop binds
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise DataError(f"{host}:{port}: cannot listen there ({e.strerror}; another server on that port? try --port)") from None
    return sock


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, image_root: str | Path | None = None,
          ipo_dir: str | Path | None = None, log=print) -> None:
    """Serve the review page until Ctrl-C (loopback only unless `host` says otherwise). DataError
    before anything is announced when the run, the image root or the port is unusable (`bind`)."""
    import uvicorn
    loopback = host in ("127.0.0.1", "localhost", "::1")
    app = create_app(run_dir, image_root, ipo_dir,
                     allowed_hosts=["127.0.0.1", "localhost", "[::1]"] if loopback else None)
    sock = bind(host, port)
    log(f"review page: http://{'[::1]' if host == '::1' else host}:{port}/  (decisions in {app.state.store.path}; Ctrl-C stops)")
    if not loopback:
        log(f"listening on {host}, not loopback only: whoever reaches this address can read the items and change decisions")
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
