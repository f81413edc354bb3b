"""The coach's screen: a local web page and its JSON API on the terminal (FastAPI)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from agent.runtime import TerminalRuntime
from webguard import SecurityHeaders


class LoginBody(BaseModel):
    person: str | None = Field(default=None, description="national id to verify 1:1; empty = identify among the roster")


class StudentLoginBody(LoginBody):
    course: str = Field(description="10-digit course code, e.g. 1212130000")


PAGE = """<!doctype html><html lang="zh"><meta charset="utf-8"><title>计时终端</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{font:18px sans-serif;margin:1em}button{font-size:20px;margin:.3em;padding:.5em 1em}
pre{background:#f4f4f4;padding:.5em}</style>
<h1>计时终端 Timing terminal</h1><div id=s>…</div>
<button onclick="go('coach/login')">教练登录 Coach in</button>
<input id=course value="1212130000" size=10>
<button onclick="go('student/login',{course:document.getElementById('course').value})">学员登录 Student in</button>
<button onclick="go('student/logout')">学员登出 Student out</button>
<button onclick="go('coach/logout')">教练登出 Coach out</button><pre id=r></pre>
<script>
async function go(p,b){const r=await fetch('/api/'+p,{method:'POST',headers:{'content-type':'application/json'},
body:JSON.stringify(b||{})});document.getElementById('r').textContent=JSON.stringify(await r.json(),null,1);}
async function poll(){try{const s=await (await fetch('/api/status')).json();
document.getElementById('s').textContent=`${s.state} · coach ${s.coach||'-'} · student ${s.student||'-'} · `+
`minutes ${s.minutes} · ${s.now} · `+(s.gps.lost?'GPS 信号丢失 lost':`GPS ${s.gps.mode||'-'}D `+
`${s.gps.sats??'-'} sats`)+(s.gps.link?` · ${s.gps.link.state} (reconnects ${s.gps.link.failures})`:'')+
` · clock ${s.gps.clock_offset_ms??'-'} ms`;}catch(e){}setTimeout(poll,1000)}poll();
</script></html>"""


COACH_PAGE_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)


def create_app(runtime: TerminalRuntime) -> FastAPI:
    app = FastAPI(title="jiapei terminal", version="1")
    # The page's one inline script is allowed until the coach screen moves it to a file (issue 6).
    app.add_middleware(SecurityHeaders, csp=COACH_PAGE_CSP)

    def answer(what: str, **kwargs: Any) -> JSONResponse:
        r = runtime.request(what, **kwargs)
        return JSONResponse({"ok": r.ok, "reason": r.reason, "message": r.message, "face": r.face,
                             "status": runtime.status()}, status_code=200 if r.ok else 409)  # fmt: skip

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return runtime.status()

    @app.post("/api/coach/login")
    def coach_login(body: LoginBody) -> JSONResponse:
        return answer("coach_login", person=body.person)

    @app.post("/api/student/login")
    def student_login(body: StudentLoginBody) -> JSONResponse:
        return answer("student_login", person=body.person, course=body.course)

    @app.post("/api/student/logout")
    def student_logout() -> JSONResponse:
        return answer("student_logout")

    @app.post("/api/coach/logout")
    def coach_logout() -> JSONResponse:
        return answer("coach_logout")

    return app
