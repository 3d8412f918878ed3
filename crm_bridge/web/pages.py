"""Server-rendered HTML: a small layout and the login page. Every value goes through ``html.escape``; pages
carry no inline script or style (the Content-Security-Policy forbids them)."""

from __future__ import annotations

from html import escape

from aiohttp import web


def layout(title: str, body: str, *, css: tuple[str, ...] = ("app.css",), js: tuple[str, ...] = (),
           nav: str = "") -> str:
    links = "".join(f'<link rel="stylesheet" href="/static/{escape(c)}">' for c in css)
    scripts = "".join(f'<script src="/static/{escape(j)}" defer></script>' for j in js)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title>{links}{scripts}</head>'
            f'<body><header class="top"><span class="brand">Contact Server</span>'
            f'<span class="title">{escape(title)}</span>{nav}</header><main>{body}</main></body></html>')


def html_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def supervisor_nav(name: str) -> str:
    return ('<nav><a href="/supervisor/wallboard">Wallboard</a><a href="/supervisor/kpi">KPIs</a>'
            '<a href="/supervisor/calls">Call records</a><a href="/supervisor/campaigns">Campaigns</a>'
            '<a href="/supervisor/surveys">Surveys</a>'
            f'<span class="who">{escape(name)}</span>'
            '<form method="post" action="/logout" class="inline"><button type="submit">Log out</button></form>'
            '</nav>')


def login_page(error: str | None = None, login: str = "") -> str:
    err = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = f"""
<section class="login">
  <h1>Agent login</h1>{err}
  <form method="post" action="/login" autocomplete="off">
    <label>Login <input name="login" value="{escape(login)}" required autofocus maxlength="64"></label>
    <label>Password <input name="password" type="password" required maxlength="256"></label>
    <button type="submit" id="login-btn">Log in</button>
  </form>
  <details><summary>Supervisor with the admin token</summary>
  <form method="post" action="/login/token" autocomplete="off">
    <label>Admin token <input name="token" type="password" required maxlength="512"></label>
    <button type="submit">Open the wallboard</button>
  </form></details>
</section>"""
    return layout("Login", body)
