"""The UI's blueprint and what every page shares: the caller's service
context, the request's database session, errors as pages."""
from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request

from keel_engine.api import framework
from keel_engine.errors import Fault
from keel_engine.services import Context

PREFIX = "/ui"
webui_bp = Blueprint("ui", __name__, url_prefix=PREFIX, template_folder="templates",
                     static_folder="static", static_url_path="/static")


def ctx(filtered: bool = False) -> Context:
    """The signed-in user as the service layer sees them. The VM portal reads
    with oVirt's user filter: only what the user's own roles give."""
    c = current_app.config["KEEL_CTX"]
    return Context(config=c.config, sessionmaker=c.sessionmaker, user_id=g.user_id, filtered=filtered)


# one session per request, committed or rolled back by the engine app
session = framework.session
reader = framework.reader


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def rollback() -> None:
    """A refused write leaves nothing behind, whatever status the page answers with."""
    s = g.pop("session", None)
    if s is not None:
        s.rollback()
        s.close()


def error_page(status: int, title: str, text: str):
    """An HTTP error under the UI's prefix, as a page (not the API's XML)."""
    rollback()
    if is_htmx():
        return render_template("_message.html", kind="error", title=title, text=text), 200, {
            "HX-Retarget": "#messages", "HX-Reswap": "innerHTML"}
    return render_template("error.html", title=title, text=text), status


@webui_bp.errorhandler(Fault)
def on_fault(f: Fault):
    # htmx swaps only 2xx answers: its error goes to the page's message area
    return error_page(f.status, f.reason, f.detail)
