// jiapei dashboard: the fleet map refreshes itself (the server draws it; this only swaps it in). No framework.
"use strict";
(function () {
  const box = document.querySelector("[data-refresh]");
  if (!box) return;
  const url = box.getAttribute("data-refresh");
  const REFRESH_MS = 10000;
  async function refresh() {
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (r.ok) {
        box.innerHTML = await r.text();
      } else if (r.status === 401 || r.redirected) {
        window.location.reload();
        return;
      }
    } catch (e) {
      // the next tick tries again; the last map stays on screen
    }
    window.setTimeout(refresh, REFRESH_MS);
  }
  window.setTimeout(refresh, REFRESH_MS);
})();
